"""Small helpers shared by the networks: input checks with actionable messages, resampling, init."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def linear_mode(spatial_dims: int) -> str:
    """The (bi/tri)linear interpolation mode name for ``spatial_dims`` (1, 2 or 3)."""
    return {1: "linear", 2: "bilinear", 3: "trilinear"}[spatial_dims]


def resize_to(x: torch.Tensor, size: list[int], mode: str) -> torch.Tensor:
    """Resample ``x`` to the spatial ``size`` (no-op when it already has it)."""
    if list(x.shape[2:]) == size:
        return x
    return F.interpolate(x, size=size, mode=mode, align_corners=False)


class EagerPathConv:
    """Mixin for an ``nn.Conv2d``/``nn.Conv3d`` with a faster eager path (``_eager_forward``, marked
    ``@torch.jit.unused``): TorchScript compiles the plain convolution, eager calls take the fast path."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            return self._conv_forward(x, self.weight, self.bias)
        return self._eager_forward(x)


def cat_channels(tensors: list[torch.Tensor]) -> torch.Tensor:
    """``torch.cat(tensors, dim=1)`` whose backward hands each input a gradient in its own dtype and in the memory
    layout of the incoming gradient (channels-last stays channels-last).

    Plain ``cat``'s backward returns channel slices of the output gradient: strided views that are contiguous in no
    layout. BatchNorm's and trilinear upsampling's CPU backward kernels take a slow path on such a view (measured
    10-30x slower than on a contiguous gradient at 1M-4M elements, bf16, channels-last), and every skip and gate
    output of a U-Net goes through a ``cat``. One copy per input makes them contiguous again. Outside autograd (no
    grad, TorchScript, tracing) this is ``torch.cat``.
    """
    if torch.jit.is_scripting():
        return torch.cat(tensors, dim=1)
    return _cat_eager(tensors)


@torch.jit.unused
def _cat_eager(tensors: list[torch.Tensor]) -> torch.Tensor:
    if torch.jit.is_tracing() or not torch.is_grad_enabled() or not any(t.requires_grad for t in tensors):
        return torch.cat(tensors, dim=1)
    return _ChannelCat.apply(*tensors)


_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}


class _ChannelCat(torch.autograd.Function):
    """Concatenation along channels with contiguous input gradients (see :func:`cat_channels`)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, *tensors: torch.Tensor) -> torch.Tensor:
        ctx.sizes = [t.shape[1] for t in tensors]
        ctx.dtypes = [t.dtype for t in tensors]
        return torch.cat(tensors, dim=1)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, ...]:
        layout = _LAST.get(grad.dim(), torch.contiguous_format)
        if not grad.is_contiguous(memory_format=layout):
            layout = torch.contiguous_format
        return tuple(
            part.to(dtype).contiguous(memory_format=layout)  # .to(memory_format=) keeps a channels-last-like view
            for part, dtype in zip(grad.split(ctx.sizes, dim=1), ctx.dtypes, strict=True)
        )


def check_input(x: torch.Tensor, network: str, in_channels: int, spatial_dims: int, multiples: list[int]) -> None:
    """Raise ``ValueError`` naming the axis and the multiple needed when ``x`` cannot go through ``network``.

    Written for TorchScript (no f-strings with format specs, plain loops) so scripted models keep the message.
    """
    if x.dim() != spatial_dims + 2:
        raise ValueError(
            f"{network}: expected a {spatial_dims + 2}D batch (B, C, {spatial_dims} spatial dims) "
            f"but got shape {list(x.shape)}"
        )
    if x.shape[1] != in_channels:
        raise ValueError(
            f"{network}: expected {in_channels} input channel(s) but the input has {x.shape[1]} (shape {list(x.shape)})"
        )
    for axis in range(spatial_dims):
        size = x.shape[axis + 2]
        multiple = multiples[axis]
        if size % multiple != 0:
            upper = (size // multiple + 1) * multiple
            raise ValueError(
                f"{network}: spatial axis {axis} has size {size}, which is not a multiple of {multiple} "
                f"(the network's total downsampling on that axis); pad it to {upper} "
                f"(e.g. monai.transforms.DivisiblePad(k={multiples})) or crop it to a multiple of {multiple}"
            )


def stride_products(strides: Sequence[Sequence[int] | int], spatial_dims: int) -> list[int]:
    """Per-axis product of a list of (scalar or per-axis) strides: the multiple every input size must have."""
    total = [1] * spatial_dims
    for stride in strides:
        per_axis = [int(stride)] * spatial_dims if isinstance(stride, int) else [int(s) for s in stride]
        if len(per_axis) != spatial_dims:
            raise ValueError(f"stride {stride} has {len(per_axis)} entries, expected {spatial_dims}")
        total = [t * s for t, s in zip(total, per_axis, strict=True)]
    return total


INIT_SCHEMES = ("kaiming", "authors_kaiming", "authors_xavier")

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def init_weights(module: nn.Module, scheme: str = "kaiming") -> None:
    """Initialise every convolution (and BatchNorm) inside ``module`` by ``scheme``.

    - ``"kaiming"``: Kaiming-normal conv weights (fan in), zero conv biases, BatchNorm left at (1, 0). Our default.
    - ``"authors_kaiming"``: Oktay et al.'s code: Kaiming-normal conv weights, conv biases left at PyTorch's
      default, BatchNorm weights ~ N(1, 0.02) and biases 0.
    - ``"authors_xavier"``: Sinha & Dolz's code: Xavier-normal conv (and transposed conv) weights, biases left at
      PyTorch's default, BatchNorm weights ~ N(1, 0.02) and biases 0.
    """
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"init must be one of {INIT_SCHEMES}, got {scheme!r}")
    for m in module.modules():
        if isinstance(m, _CONVS):
            if scheme == "authors_xavier":
                nn.init.xavier_normal_(m.weight)
            else:
                nn.init.kaiming_normal_(m.weight, a=0.0, mode="fan_in")
            if scheme == "kaiming" and m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, _BATCH_NORMS) and scheme != "kaiming" and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def kaiming_init(module: nn.Module) -> None:
    """Kaiming-normal init of every conv weight and zero bias (``init_weights(module, "kaiming")``)."""
    init_weights(module, "kaiming")
