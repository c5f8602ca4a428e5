"""Position (spatial self-) attention and channel attention (Fu et al. DANet, as used by Sinha & Dolz 2021)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Conv
from torch import nn


class PositionAttention(nn.Module):
    """Position attention: every position attends to every other, ``out = gamma * (V softmax(Q^T K)^T) + x``.

    Queries and keys are 1x1 projections to ``in_channels // 8`` channels, values keep ``in_channels``; the energy is
    unscaled (as in the authors' code) and ``gamma`` is a learned scalar starting at 0, so the block starts as the
    identity. The N x N affinity is never materialised: the product goes through
    ``torch.nn.functional.scaled_dot_product_attention`` (memory linear in N with its fused kernels). Queries and keys
    are zero-padded to the value width so the fused CPU kernel applies; zero channels leave ``Q^T K`` unchanged.

    Args:
        spatial_dims: number of spatial dimensions (2 or 3).
        in_channels: feature channels ``C``.
        reduction: query/key width is ``max(C // reduction, 1)``.
    """

    def __init__(self, spatial_dims: int, in_channels: int, reduction: int = 8) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        qk_channels = max(in_channels // reduction, 1)
        self.query = conv(in_channels, qk_channels, kernel_size=1)
        self.key = conv(in_channels, qk_channels, kernel_size=1)
        self.value = conv(in_channels, in_channels, kernel_size=1)
        self.gamma = nn.Parameter(torch.zeros(1))
        self.pad_qk = in_channels - qk_channels

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        """The attention term ``V softmax(Q^T K)^T`` alone, shaped like ``x`` (before the gamma residual)."""
        batch, channels = x.shape[0], x.shape[1]
        # (B, N, C) layouts with a unit last-dim stride: the fused kernels need it, else SDPA falls back to the
        # N x N math path. Padding q/k copies them anyway; v is copied once here.
        q = self.query(x).flatten(2).transpose(1, 2)
        k = self.key(x).flatten(2).transpose(1, 2)
        v = self.value(x).flatten(2).transpose(1, 2).contiguous()
        if self.pad_qk > 0:
            q = F.pad(q, [0, self.pad_qk])
            k = F.pad(k, [0, self.pad_qk])
        else:
            q = q.contiguous()
            k = k.contiguous()
        if not torch.jit.is_scripting() and torch.is_grad_enabled() and x.device.type == "cpu":
            if q.dtype in (torch.bfloat16, torch.float16):
                out = self._product_in_fp32(q, k, v)
            else:
                out = F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1), scale=1.0)
        else:
            out = F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1), scale=1.0)
        return out.squeeze(1).transpose(1, 2).reshape([batch, channels] + list(x.shape[2:]))

    @torch.jit.unused
    def _product_in_fp32(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The attention product in fp32 outside autocast, result in the inputs' dtype. For CPU training only:
        PyTorch's fused CPU kernel computes its bf16 backward about 5x slower than its fp32 one (measured at 24^3
        positions), so fp32 is both faster and more accurate there; inference keeps the faster bf16 forward."""
        with torch.autocast("cpu", enabled=False):
            out = F.scaled_dot_product_attention(
                q.float().unsqueeze(1), k.float().unsqueeze(1), v.float().unsqueeze(1), scale=1.0
            )
        return out.to(q.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gamma * self.attend(x) + x


class ChannelAttention(nn.Module):
    """Channel attention: ``out = gamma * softmax(rowmax(E) - E) X + x`` with ``E = X X^T`` (C x C).

    The ``rowmax - E`` form is the authors' (DANet) choice, kept for fidelity; ``gamma`` starts at 0.
    """

    def __init__(self) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(2)
        energy = torch.bmm(flat, flat.transpose(1, 2))
        energy = energy.amax(dim=-1, keepdim=True) - energy
        attention = torch.softmax(energy, dim=-1)
        out = torch.bmm(attention, flat).reshape(x.shape)
        return self.gamma * out + x


class AttentionBranch(nn.Sequential):
    """3x3 conv-norm-act (2C -> C), position or channel attention, 3x3 conv-norm-act (the authors' PAM_CAM_Layer)."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        position: bool,
        norm: str | tuple = "batch",
        act: str | tuple = "prelu",
    ) -> None:
        attention: nn.Module = PositionAttention(spatial_dims, out_channels) if position else ChannelAttention()
        super().__init__(
            Convolution(spatial_dims, in_channels, out_channels, kernel_size=3, norm=norm, act=act),
            attention,
            Convolution(spatial_dims, out_channels, out_channels, kernel_size=3, norm=norm, act=act),
        )
