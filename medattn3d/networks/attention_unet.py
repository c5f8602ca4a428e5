"""Attention U-Net (Oktay et al., MIDL 2018, arXiv 1804.03999) for 2D and 3D, MONAI conventions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Conv, Pool
from torch import nn

from medattn3d.networks.blocks import DoubleConv, IdentityGate, MultiHeadGridAttention
from medattn3d.networks.utils import (
    cat_channels,
    check_input,
    init_weights,
    linear_mode,
    resize_to,
    stride_products,
)


class UpLevel(nn.Module):
    """Decoder level: (optionally) project the coarser map to fewer channels on its own grid, upsample it
    (bi/trilinear), concatenate it with the skip and apply a double conv."""

    def __init__(self, project: nn.Module, conv: nn.Module, mode: str) -> None:
        super().__init__()
        self.project = project
        self.conv = conv
        self.mode = mode

    def forward(self, skip: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        upsampled = resize_to(self.project(coarse), list(skip.shape[2:]), self.mode)
        return self.conv(cat_channels([skip, upsampled]))


class GatedUpLevel(nn.Module):
    """Decoder level with a gated skip: gate the skip with the coarser signal ``g``, then :class:`UpLevel`."""

    def __init__(self, gate: nn.Module, up: UpLevel) -> None:
        super().__init__()
        self.gate = gate
        self.up = up

    def forward(
        self, skip: torch.Tensor, gating: torch.Tensor, coarse: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        gated, alpha = self.gate(skip, gating)
        return self.up(gated, coarse), alpha


class AttentionUNet(nn.Module):
    """U-Net with additive grid attention gates on the skip connections (Oktay et al. 2018).

    Encoder: a double conv per level, max-pooling by ``strides[i]`` between levels; the deepest level is the
    centre, and a 1x1 conv-norm-act on it is the gating signal of the deepest gate. Every coarser skip
    (all but the full-resolution one, as in the authors' model) passes through ``attention_heads`` grid gates
    whose gating signal is the decoder output one level below. Decoder levels upsample (bi/trilinear) the coarser
    map, concatenate it with the gated skip and apply a double conv.

    Args:
        spatial_dims: number of spatial dimensions (2 or 3).
        in_channels: number of input channels.
        out_channels: number of output channels (classes, background included).
        channels: feature widths per level, finest first; at least 3 levels. The authors' default is
            (16, 32, 64, 128, 256) (their widths / feature_scale 4).
        strides: downsampling factor between consecutive levels (int or per-axis sequence each);
            ``len(strides) == len(channels) - 1``. Input sizes must be multiples of their per-axis product.
        kernel_size: kernel size of the encoder/decoder convolutions.
        norm: MONAI norm spec (e.g. ``"batch"``, ``("instance", {"affine": True})``).
        act: MONAI activation spec.
        dropout: dropout rate inside the double convolutions.
        attention_heads: grid gates per gated level (2 in the authors' CT model); their outputs are merged by a
            1x1 conv-norm-act.
        deep_supervision: in ``train()`` mode, return ``[logits, head_1, ..., head_k]`` (list of tensors; head_i
            is a 1x1 conv on decoder level ``i`` at that level's own resolution), the form
            ``monai.losses.DeepSupervisionLoss`` takes. ``eval()`` always returns the logits tensor alone.
        deep_supr_num: number of extra heads ``k`` (default: every decoder level below full resolution).
        output_fusion: the authors' CT variant: 1x1 heads on every decoder level, upsampled to full resolution,
            concatenated and mixed by a 1x1 conv into the logits. Off by default (plain 1x1 output head).
        up_projection: project the coarser decoder map to the skip's width with a 1x1 conv on its own (coarse)
            grid before upsampling, as MONAI's up-convolution does; the double conv then reads 2 x width channels
            instead of 3 x width (about a fifth fewer FLOPs in total). ``False`` concatenates the full coarse width
            as the authors' ``UnetUp3_CT`` does.
        conv_bias: biases in the encoder/decoder double convolutions (the authors' have them; a bias right before
            BatchNorm is cancelled by it, so off by default).
        init: ``"kaiming"`` (Kaiming-normal convs, zero biases) or ``"authors"`` (the authors' scheme: Kaiming-normal
            convs, PyTorch-default biases, BatchNorm weights ~ N(1, 0.02)).
        attention_gates: ``False`` replaces every gate (and the gating-signal conv) by the identity: the same
            encoder, decoder and heads with plain skip connections, i.e. the matching U-Net for an attention on/off
            comparison. Its ``forward_with_attention`` returns no maps.

    ``forward_with_attention(x)`` returns ``(logits, attention)`` where ``attention[i]`` holds the gate coefficients
    of gated level ``i + 1`` (finest gated level first), shape ``(B, attention_heads, *level_size)``, in [0, 1];
    ``attention_map_names()`` names them (``gate_level1``, ...).

    The registry preset ``get_network("attention_unet_oktay2018", ...)`` is the authors' released CT model.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        channels: Sequence[int] = (16, 32, 64, 128, 256),
        strides: Sequence[Sequence[int] | int] = (2, 2, 2, 2),
        kernel_size: Sequence[int] | int = 3,
        norm: str | tuple = "batch",
        act: str | tuple = "relu",
        dropout: float = 0.0,
        attention_heads: int = 2,
        deep_supervision: bool = False,
        deep_supr_num: int | None = None,
        output_fusion: bool = False,
        up_projection: bool = True,
        conv_bias: bool = False,
        init: str = "kaiming",
        attention_gates: bool = True,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if len(channels) < 3:
            raise ValueError(f"channels needs at least 3 levels (one gated skip), got {tuple(channels)}")
        if len(strides) != len(channels) - 1:
            raise ValueError(
                f"len(strides) must be len(channels) - 1 = {len(channels) - 1}, got strides={tuple(strides)}"
            )
        if init not in ("kaiming", "authors"):
            raise ValueError(f"init must be 'kaiming' or 'authors', got {init!r}")
        num_coarse = len(channels) - 2
        supr_num = num_coarse if deep_supr_num is None else deep_supr_num
        if deep_supervision and not 1 <= supr_num <= num_coarse:
            raise ValueError(f"deep_supr_num must be in [1, {num_coarse}] for {len(channels)} levels, got {supr_num}")

        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.multiples = self.required_input_multiple(spatial_dims, strides)
        self.num_gated_levels = num_coarse if attention_gates else 0
        self.deep_supervision = deep_supervision
        self.deep_supr_num = supr_num if deep_supervision else 0
        self.output_fusion = output_fusion
        mode = linear_mode(spatial_dims)
        self.mode = mode
        conv_kw = {"kernel_size": kernel_size, "norm": norm, "act": act, "dropout": dropout, "bias": conv_bias}
        pool = Pool[Pool.MAX, spatial_dims]
        conv1x1 = Conv[Conv.CONV, spatial_dims]

        encoder: list[nn.Module] = [DoubleConv(spatial_dims, in_channels, channels[0], **conv_kw)]
        for i in range(1, len(channels)):
            encoder.append(
                nn.Sequential(
                    pool(kernel_size=strides[i - 1], stride=strides[i - 1]),
                    DoubleConv(spatial_dims, channels[i - 1], channels[i], **conv_kw),
                )
            )
        self.encoder = nn.ModuleList(encoder)
        self.gating: nn.Module = (
            Convolution(spatial_dims, channels[-1], channels[-1], kernel_size=1, norm=norm, act=act)
            if attention_gates
            else nn.Identity()
        )

        def up_level(i: int) -> UpLevel:
            """Upsampling block into level ``i`` from level ``i + 1``."""
            coarse = channels[i] if up_projection else channels[i + 1]
            project = conv1x1(channels[i + 1], channels[i], kernel_size=1) if up_projection else nn.Identity()
            return UpLevel(project, DoubleConv(spatial_dims, channels[i] + coarse, channels[i], **conv_kw), mode)

        # gated decoder levels, coarsest first: level i gates skip i with the output of level i + 1
        def gate(i: int) -> nn.Module:
            """The gate on skip ``i`` (gating signal: level ``i + 1``), or the identity without gates."""
            if not attention_gates:
                return IdentityGate()
            return MultiHeadGridAttention(
                spatial_dims,
                channels[i],
                channels[i + 1],
                inter_channels=channels[i],
                sub_sample_factor=strides[i],
                heads=attention_heads,
                norm=norm,
                act=act,
            )

        self.decoder = nn.ModuleList(GatedUpLevel(gate(i), up_level(i)) for i in range(len(channels) - 2, 0, -1))
        self.final_up = up_level(0)

        self.head = conv1x1(channels[0], out_channels, kernel_size=1)
        num_level_heads = num_coarse if output_fusion else self.deep_supr_num
        self.level_heads = nn.ModuleList(
            conv1x1(channels[i], out_channels, kernel_size=1) for i in range(1, num_level_heads + 1)
        )
        self.fuse: nn.Module = (
            conv1x1(out_channels * (num_coarse + 1), out_channels, kernel_size=1) if output_fusion else nn.Identity()
        )
        init_weights(self, "kaiming" if init == "kaiming" else "authors_kaiming")

    @staticmethod
    def required_input_multiple(
        spatial_dims: int, strides: Sequence[Sequence[int] | int] = (2, 2, 2, 2), **_: Any
    ) -> list[int]:
        """Per-axis multiple every input size must have: the product of ``strides`` (16 with the defaults).

        Takes the constructor's keyword arguments (others are ignored), so a planner can ask before building.
        """
        return stride_products(strides, spatial_dims)

    @torch.jit.export
    def attention_map_names(self) -> list[str]:
        """Names of the maps ``forward_with_attention`` returns, in its order: ``gate_level1`` (finest) ..."""
        names: list[str] = []
        for i in range(self.num_gated_levels):
            names.append("gate_level" + str(i + 1))
        return names

    def _decode(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Decoder outputs (finest first, one per level but the centre) and gate coefficients (finest first)."""
        check_input(x, "AttentionUNet", self.in_channels, self.spatial_dims, self.multiples)
        skips: list[torch.Tensor] = []
        h = x
        for level in self.encoder:
            h = level(h)
            skips.append(h)
        num_levels = len(skips)
        gating = self.gating(skips[-1])
        coarse = skips[-1]
        decoded: list[torch.Tensor] = []
        alphas: list[torch.Tensor] = []
        for j, level in enumerate(self.decoder):
            coarse, alpha = level(skips[num_levels - 2 - j], gating, coarse)
            gating = coarse
            decoded.insert(0, coarse)
            if self.num_gated_levels > 0:
                alphas.insert(0, alpha)
        finest = self.final_up(skips[0], coarse)
        decoded.insert(0, finest)
        return decoded, alphas

    def _heads(self, decoded: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits at full resolution and the per-level head outputs (at their own resolutions)."""
        main = self.head(decoded[0])
        level_logits: list[torch.Tensor] = []
        for i, head in enumerate(self.level_heads):
            level_logits.append(head(decoded[i + 1]))
        if self.output_fusion:
            size = list(main.shape[2:])
            parts = [main] + [resize_to(p, size, self.mode) for p in level_logits]
            main = self.fuse(torch.cat(parts, dim=1))
        return main, level_logits

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        decoded, _ = self._decode(x)
        logits, level_logits = self._heads(decoded)
        if self.training and self.deep_supervision:
            return [logits] + level_logits[: self.deep_supr_num]
        return logits

    @torch.jit.export
    def forward_with_attention(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits (as ``forward`` in eval mode) and the gate coefficients of every gated level, finest first."""
        decoded, alphas = self._decode(x)
        logits, _ = self._heads(decoded)
        return logits, alphas
