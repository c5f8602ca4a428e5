"""Additive grid attention gate (Oktay et al. 2018, eq. 1-2), for 2D and 3D skip connections."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Conv
from monai.utils import ensure_tuple_rep
from torch import nn

from medattn3d.networks.utils import cat_channels, linear_mode


class GridAttentionGate(nn.Module):
    """Grid attention gate: gate a skip feature ``x`` by a coarser gating signal ``g``.

    ``theta`` projects ``x`` to ``inter_channels`` with a kernel = stride = ``sub_sample_factor`` convolution, landing
    on ``g``'s grid; ``phi`` is a 1x1 projection of ``g``. The coefficients are
    ``alpha = sigmoid(psi(relu(theta(x) + phi(g))))``, resampled (bi/trilinear) back to ``x``'s grid; the output is
    ``W(alpha * x)`` with ``W`` a 1x1 convolution followed by a norm layer (the authors' "output transform").

    MONAI's ``monai.networks.blocks.AttentionBlock`` gates at equal resolution without the strided ``theta``,
    the coefficient resampling or ``W``, so it is not the paper's gate; hence this block.

    Args:
        spatial_dims: number of spatial dimensions (2 or 3).
        in_channels: channels of the skip feature ``x``.
        gating_channels: channels of the gating signal ``g``.
        inter_channels: width of the joint ``theta``/``phi`` space; ``in_channels // 2`` (at least 1) by default.
        sub_sample_factor: grid ratio between ``x`` and ``g`` per axis (the encoder stride between them).
        norm: MONAI norm spec for the output transform ``W``.

    Forward returns ``(gated_x, alpha)`` with ``alpha`` of shape ``(B, 1, *x.shape[2:])`` in [0, 1].
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        gating_channels: int,
        inter_channels: int | None = None,
        sub_sample_factor: Sequence[int] | int = 2,
        norm: str | tuple = "batch",
    ) -> None:
        super().__init__()
        inter = inter_channels if inter_channels is not None else max(in_channels // 2, 1)
        factor = ensure_tuple_rep(sub_sample_factor, spatial_dims)
        conv = Conv[Conv.CONV, spatial_dims]
        self.theta = conv(in_channels, inter, kernel_size=factor, stride=factor, padding=0, bias=False)
        self.phi = conv(gating_channels, inter, kernel_size=1, bias=True)
        self.psi = conv(inter, 1, kernel_size=1, bias=True)
        self.output_transform = Convolution(
            spatial_dims, in_channels, in_channels, kernel_size=1, norm=norm, act=None, bias=True
        )
        self.mode = linear_mode(spatial_dims)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        theta_x = self.theta(x)
        phi_g = self.phi(g)
        if phi_g.shape[2:] != theta_x.shape[2:]:
            phi_g = F.interpolate(phi_g, size=theta_x.shape[2:], mode=self.mode, align_corners=False)
        alpha = torch.sigmoid(self.psi(F.relu(theta_x + phi_g)))
        if alpha.shape[2:] != x.shape[2:]:
            alpha = F.interpolate(alpha, size=x.shape[2:], mode=self.mode, align_corners=False)
        return self.output_transform(alpha * x), alpha


class MultiHeadGridAttention(nn.Module):
    """Several grid gates in parallel on the same ``(x, g)``, their outputs merged by a 1x1 conv-norm-act.

    The authors' CT model (``MultiAttentionBlock``) uses two heads; their single-gate model keeps the same 1x1
    conv-norm-act after its one gate, and so does this block with ``heads=1``.

    Forward returns ``(gated_x, alphas)`` with ``alphas`` of shape ``(B, heads, *x.shape[2:])``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        gating_channels: int,
        inter_channels: int | None = None,
        sub_sample_factor: Sequence[int] | int = 2,
        heads: int = 2,
        norm: str | tuple = "batch",
        act: str | tuple = "relu",
    ) -> None:
        super().__init__()
        if heads < 1:
            raise ValueError(f"heads must be >= 1, got {heads}")
        self.gates = nn.ModuleList(
            GridAttentionGate(spatial_dims, in_channels, gating_channels, inter_channels, sub_sample_factor, norm)
            for _ in range(heads)
        )
        self.combine = Convolution(spatial_dims, in_channels * heads, in_channels, kernel_size=1, norm=norm, act=act)
        self.heads = heads

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs: list[torch.Tensor] = []
        alphas: list[torch.Tensor] = []
        for gate in self.gates:
            y, alpha = gate(x, g)
            outputs.append(y)
            alphas.append(alpha)
        merged = self.combine(cat_channels(outputs) if self.heads > 1 else outputs[0])
        return merged, torch.cat(alphas, dim=1)


class IdentityGate(nn.Module):
    """Stand-in for a gate that lets the skip through unchanged: ``(x, no coefficients)`` (an empty channel slice).

    ``AttentionUNet(attention_gates=False)`` puts it where the gates would be, so the network is otherwise the same.
    """

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, x[:, :0]
