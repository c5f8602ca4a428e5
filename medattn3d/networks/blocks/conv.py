"""Double convolution block shared by both networks, and a 3D convolution with a faster bf16 weight gradient on
small grids."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from torch import nn

from medattn3d.networks.utils import EagerPathConv

# im2col holds (batch x positions) x (kernel volume x in_channels) values; above this the patch matrix costs more
# memory traffic than oneDNN's own weight gradient loses (measured: 4-5x faster at 2 x 8 x 8 x 4 and 2 x 4^3
# positions, 128-256 channels; 4x slower at 2 x 16 x 16 x 8 with 64 channels)
MAX_GEMM_POSITIONS = 1024
MAX_GEMM_PATCH_VALUES = 1 << 24


class SmallGridConv3d(EagerPathConv, nn.Conv3d):
    """``nn.Conv3d`` (same parameters, same forward) whose weight gradient, in bf16 training on a small grid, is one
    matrix product of the output gradient with the unfolded input patches.

    oneDNN's bf16 weight gradient of a 3x3x3 convolution costs 4-9x its forward on the deep, small levels of a U-Net
    at the bundle's patch (e.g. 6.4 ms against 0.7 ms for 128 channels on 2 x 8 x 8 x 4); a plain GEMM over the
    unfolded patches does it in a quarter of that. The forward, the input gradient and everything outside bf16
    training on at most :data:`MAX_GEMM_POSITIONS` output positions are ``nn.Conv3d``'s own; the weight gradient
    is the same sum in another order (fp32 accumulation, as oneDNN's). Only stride 1, dilation 1, one group,
    zero 'same' padding; inputs shallower than the kernel go to ``nn.Conv3d`` (:mod:`medattn3d.engine.conv_guard`).
    """

    @torch.jit.unused
    def _eager_forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._gemm_applies(x):
            return self._conv_forward(x, self.weight, self.bias)
        with torch.autocast(device_type="cpu", enabled=False):
            weight = self.weight.to(torch.bfloat16)
            bias = self.bias.to(torch.bfloat16) if self.bias is not None else None
            return _ConvGemmWeightGrad.apply(x.to(torch.bfloat16), weight, bias, list(self.padding))

    def _gemm_applies(self, x: torch.Tensor) -> bool:
        if not (torch.is_grad_enabled() and self.weight.requires_grad and x.device.type == "cpu" and x.dim() == 5):
            return False
        bf16 = x.dtype == torch.bfloat16 if not torch.is_autocast_enabled("cpu") else _autocast_is_bf16()
        if not bf16 or torch.jit.is_tracing():
            return False
        kernel = self.kernel_size
        same = all(p == k // 2 and k % 2 == 1 for p, k in zip(self.padding, kernel, strict=True))
        plain = self.stride == (1, 1, 1) and self.dilation == (1, 1, 1) and self.groups == 1
        if not (same and plain and self.padding_mode == "zeros" and isinstance(self.padding, tuple)):
            return False
        if any(1 < size < k for size, k in zip(x.shape[2:], kernel, strict=True)):
            return False  # the shallow-input guard's case: leave it to nn.Conv3d
        positions = x.shape[0] * x.shape[2] * x.shape[3] * x.shape[4]
        patch_values = positions * self.weight[0].numel()  # weight[0]: in_channels x kernel volume
        return positions <= MAX_GEMM_POSITIONS and patch_values <= MAX_GEMM_PATCH_VALUES


def _autocast_is_bf16() -> bool:
    return torch.get_autocast_dtype("cpu") == torch.bfloat16


def unfold_patches(x: torch.Tensor, kernel: Sequence[int], padding: Sequence[int]) -> torch.Tensor:
    """The (batch x positions) x (kd x kh x kw x channels) patch matrix of a stride-1 3D convolution with zero
    ``padding`` (channels fastest, matching a channels-last weight)."""
    padded = F.pad(x, [p for p in reversed(padding) for _ in range(2)]).contiguous(memory_format=torch.channels_last_3d)
    n, c = padded.shape[:2]
    out = [padded.shape[2 + i] - kernel[i] + 1 for i in range(3)]
    s_n, s_c, s_d, s_h, s_w = padded.stride()
    patches = padded.as_strided((n, *out, *kernel, c), (s_n, s_d, s_h, s_w, s_d, s_h, s_w, s_c))
    return patches.reshape(n * out[0] * out[1] * out[2], -1)


class _ConvGemmWeightGrad(torch.autograd.Function):
    """3D convolution (stride 1, zero 'same' padding) with its weight gradient as a GEMM over unfolded patches."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        padding: list[int],
    ) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.has_bias = padding, bias is not None
        return F.conv3d(x, weight, bias, 1, padding)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple:
        x, weight = ctx.saved_tensors
        grad = grad.contiguous(memory_format=torch.channels_last_3d)
        grad_input = None
        if ctx.needs_input_grad[0]:
            grad_input = torch.ops.aten.convolution_backward(
                grad, x, weight, None, [1, 1, 1], ctx.padding, [1, 1, 1], False, [0, 0, 0], 1, [True, False, False]
            )[0]
        grad_weight = None
        if ctx.needs_input_grad[1]:
            kernel = list(weight.shape[2:])
            rows = grad.permute(0, 2, 3, 4, 1).reshape(-1, grad.shape[1])  # a view: grad is channels-last
            product = rows.t() @ unfold_patches(x, kernel, ctx.padding)
            grad_weight = product.view(weight.shape[0], *kernel, weight.shape[1]).permute(0, 4, 1, 2, 3)
        grad_bias = grad.sum(dim=(0, 2, 3, 4)) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_input, grad_weight, grad_bias, None


class DoubleConv(nn.Sequential):
    """Two conv-norm-dropout-act layers with 'same' padding.

    Like ``monai.networks.nets.basic_unet.TwoConv`` but with a configurable ``kernel_size``
    (MONAI's is fixed at 3; a non-propagated kernel size is a known AttentionUnet pain point). In 3D the
    convolutions are :class:`SmallGridConv3d` (the same module, parameters and outputs; a faster bf16 weight
    gradient on small grids).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: Sequence[int] | int = 3,
        norm: str | tuple = "batch",
        act: str | tuple = "relu",
        dropout: float = 0.0,
        bias: bool = False,
    ) -> None:
        super().__init__()
        for name, cin in (("conv_0", in_channels), ("conv_1", out_channels)):
            block = Convolution(
                spatial_dims,
                cin,
                out_channels,
                kernel_size=kernel_size,
                norm=norm,
                act=act,
                dropout=dropout,
                bias=bias,
            )
            if type(block.conv) is nn.Conv3d:
                block.conv.__class__ = SmallGridConv3d  # adds behaviour only: no state, same state_dict
            self.add_module(name, block)
