"""Work around wrong bf16 (transposed) Conv3d weight gradients on CPU for inputs shallower than the kernel.

With PyTorch 2.13's oneDNN on an AVX-512-bf16 CPU, the weight gradient of a bf16 ``conv3d`` is garbage (errors up
to 1e37, sometimes NaN) when the input's depth lies strictly between 1 and the kernel's depth, e.g. a 3x3x3
convolution on a 2 x 2 x 1 map (ResNet-18's last stage on a 64 x 64 x 32 patch). The forward output and the input
gradient are right, so nothing fails until Adam's second moments overflow and the loss turns NaN a few epochs
later; stride-1 transposed convolutions fail the same way. ``benchmarks/conv3d_bf16_gradients.py`` prints the
affected shapes. The guard covers any spatial axis
strictly between 1 and the kernel size (a superset of the failing cases); such convolutions are tiny, so running
them in fp32 costs nothing measurable.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.overrides import TorchFunctionMode

CONV3D_FUNCTIONS = (
    torch.conv3d,
    torch.nn.functional.conv3d,
    torch.conv_transpose3d,
    torch.nn.functional.conv_transpose3d,
)


def is_shallow_conv3d(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """True when a spatial size of ``x`` lies strictly between 1 and the kernel's size along that axis."""
    if x.dim() != 5 or weight.dim() != 5:
        return False
    return any(1 < size < kernel for size, kernel in zip(x.shape[2:], weight.shape[2:], strict=True))


class ShallowConv3dInFp32(TorchFunctionMode):
    """Inside this mode, every ``conv3d`` / ``conv_transpose3d`` whose input is shallower than its kernel (see
    :func:`is_shallow_conv3d`) runs in fp32 with autocast off, whatever autocast says; every other call is untouched."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in CONV3D_FUNCTIONS and len(args) >= 2 and is_shallow_conv3d(args[0], args[1]):
            with torch.autocast(device_type=args[0].device.type, enabled=False):
                return func(*[_to_fp32(a) for a in args], **{k: _to_fp32(v) for k, v in kwargs.items()})
        return func(*args, **kwargs)


def _to_fp32(value: Any) -> Any:
    return value.float() if isinstance(value, torch.Tensor) and value.is_floating_point() else value
