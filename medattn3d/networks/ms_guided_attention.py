"""Multi-scale self-guided attention network (Sinha & Dolz, IEEE JBHI 2021, arXiv 1906.02849) in 2D and 3D."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Conv
from torch import nn

from medattn3d.networks.blocks import GuidedRefinementStep
from medattn3d.networks.blocks.resnet_encoder import ResNetEncoder, load_backbone_weights
from medattn3d.networks.utils import check_input, init_weights, linear_mode, resize_to


class MultiScaleGuidedAttentionNet(nn.Module):
    """ResNet features at four scales, fused into ``F_ms`` and refined per scale by guided attention.

    Each scale ``s`` of the ResNet encoder is projected to ``feature_channels`` (1x1 conv-norm-act) and resampled to
    the finest scale (1/4 of the input); ``F_ms`` fuses the four (3x3, 3x3, 1x1 conv-norm-act). Refinement step 1
    feeds ``[F_s, F_ms]`` and every later step ``[F_s, att_s * F_ms]`` to position + channel attention, multiplied
    by the output of an encoder-decoder shared by the scales of that step. 1x1 heads predict from every ``F_s``
    and from the last step's attention features; the output is the mean of the last step's predictions.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (classes, background included).
        backbone: ResNet depth name (``resnet10`` ... ``resnet200``) or ``resnext50_32x4d`` /
            ``resnext101_32x8d``; the paper says ResNet-101, the authors' code trains a ResNeXt-101 32x8d from
            scratch; ``resnet50`` keeps its 256..2048 stage widths at a fraction of the cost.
        backbone_widths: the backbone's four stage widths (default 64, 128, 256, 512).
        feature_channels: width ``C`` of the per-scale and fused features (64 in the paper).
        num_steps: refinement steps (2 in the paper); each adds a guided-loss pair per scale.
        norm: MONAI norm spec for every block.
        act: MONAI activation spec of the projections and attention branches (PReLU in the paper).
        pretrained_backbone: optional local file with ResNet weights (e.g. MedicalNet for 3D, 1 input channel:
            their ``{"state_dict": {"module.conv1.weight": ...}}`` layout loads as is).
        shortcut_type: the ResNet's shortcuts: ``"B"`` (1x1 conv + norm, the default) or ``"A"`` (zero-padded
            identity, as MedicalNet's resnet18/34 were trained with). Scriptable either way.
        init: ``"kaiming"`` (Kaiming-normal convs, zero biases; the backbone keeps MONAI's init) or ``"authors"``
            (the authors' scheme on every conv, backbone included: Xavier-normal weights, PyTorch-default biases,
            BatchNorm weights ~ N(1, 0.02)).

    Input sizes must be multiples of 32 (:meth:`required_input_multiple`): the backbone's deepest stage is 1/32 of
    the input. In ``train()`` a batch whose deepest stage holds a single voxel is refused (BatchNorm cannot
    normalise one value).

    In ``eval()`` ``forward`` returns the logits ``(B, out_channels, *input_size)``. In ``train()`` it returns a
    dict of lists of tensors (all lists step-major: entry ``k * num_scales + s`` is step ``k``, scale ``s``):

    - ``logits``: ``[mean of the last step's predictions]`` at input size;
    - ``scale_logits``: the ``num_scales`` predictions from ``F_s``, then the ``num_scales`` from the last step,
      at input size (the paper's eight deeply supervised outputs);
    - ``latents``: the encoder-decoder's deepest maps, ``num_steps * num_scales`` (guided loss: step k vs k+1);
    - ``reconstruction_inputs`` / ``reconstructions``: the encoder-decoder inputs and outputs (reconstruction loss).

    ``forward_with_attention(x)`` returns ``(logits, maps)``, ``maps`` step-major per scale, each
    ``(B, 1, *finest_feature_size)``: the channel-mean magnitude of the guided attention output, scaled to [0, 1]
    per sample; ``attention_map_names()`` names them (``step1_scale1``, ...).

    The registry preset ``get_network("ms_guided_attention_sinha2021", ...)`` is the authors' model.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        backbone: str = "resnet50",
        backbone_widths: Sequence[int] | None = None,
        feature_channels: int = 64,
        num_steps: int = 2,
        norm: str | tuple = "batch",
        act: str | tuple = "prelu",
        pretrained_backbone: str | Path | None = None,
        shortcut_type: str = "B",
        init: str = "kaiming",
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        if init not in ("kaiming", "authors"):
            raise ValueError(f"init must be 'kaiming' or 'authors', got {init!r}")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.multiples = self.required_input_multiple(spatial_dims)
        self.mode = linear_mode(spatial_dims)
        self.encoder = ResNetEncoder(
            spatial_dims, in_channels, backbone, backbone_widths, norm=norm, shortcut_type=shortcut_type
        )
        self.num_scales = len(self.encoder.out_channels)
        self.num_steps = num_steps
        c = feature_channels
        self.reduce = nn.ModuleList(
            Convolution(spatial_dims, ch, c, kernel_size=1, norm=norm, act=act) for ch in self.encoder.out_channels
        )
        self.fuse = nn.Sequential(
            Convolution(spatial_dims, c * self.num_scales, c, kernel_size=3, norm=norm, act=act),
            Convolution(spatial_dims, c, c, kernel_size=3, norm=norm, act=act),
            Convolution(spatial_dims, c, c, kernel_size=1, norm=norm, act=act),
        )
        self.steps = nn.ModuleList(
            GuidedRefinementStep(spatial_dims, c, self.num_scales, norm=norm, act=act) for _ in range(num_steps)
        )
        conv = Conv[Conv.CONV, spatial_dims]
        self.initial_heads = nn.ModuleList(conv(c, out_channels, kernel_size=1) for _ in range(self.num_scales))
        self.final_heads = nn.ModuleList(conv(c, out_channels, kernel_size=1) for _ in range(self.num_scales))
        if init == "authors":
            init_weights(self, "authors_xavier")
        else:
            for name, child in self.named_children():
                if name != "encoder":  # MONAI's ResNet initialises itself (Kaiming convs)
                    init_weights(child, "kaiming")
        if pretrained_backbone is not None:
            load_backbone_weights(self.encoder.resnet, pretrained_backbone)

    @staticmethod
    def required_input_multiple(spatial_dims: int, **_: Any) -> list[int]:
        """Per-axis multiple every input size must have: 32, the backbone's total downsampling (stem 4, then three
        stride-2 stages), which also covers the encoder-decoder's two halvings of the 1/4-scale map.

        Takes the constructor's keyword arguments (others are ignored), so a planner can ask before building.
        """
        return [32] * spatial_dims

    @torch.jit.export
    def attention_map_names(self) -> list[str]:
        """Names of the maps ``forward_with_attention`` returns, in its order: ``step1_scale1``, ``step1_scale2``..."""
        names: list[str] = []
        for k in range(self.num_steps):
            for s in range(self.num_scales):
                names.append("step" + str(k + 1) + "_scale" + str(s + 1))
        return names

    def _refine(
        self, x: torch.Tensor
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """Per-scale features, then step-major attention features, latents, encoder-decoder inputs, outputs."""
        check_input(x, "MultiScaleGuidedAttentionNet", self.in_channels, self.spatial_dims, self.multiples)
        if self.training:
            deepest = x.shape[0]
            for axis in range(self.spatial_dims):
                deepest = deepest * (x.shape[axis + 2] // self.multiples[axis])
            if deepest == 1:
                raise ValueError(
                    f"MultiScaleGuidedAttentionNet: in training the input {list(x.shape)} leaves one voxel in the "
                    f"backbone's deepest stage (1/32 of the input), which BatchNorm cannot normalise; give a batch of "
                    f"2 or more, or a patch of at least 64 on one axis"
                )
        features = self.encoder(x)
        finest = list(features[0].shape[2:])
        scale_features: list[torch.Tensor] = []
        for i, reduce in enumerate(self.reduce):
            scale_features.append(resize_to(reduce(features[i]), finest, self.mode))
        fused = self.fuse(torch.cat(scale_features, dim=1))
        guides = [fused for _ in scale_features]
        attended: list[torch.Tensor] = []
        latents: list[torch.Tensor] = []
        inputs: list[torch.Tensor] = []
        reconstructions: list[torch.Tensor] = []
        for step in self.steps:
            step_attended, step_latents, step_inputs, step_recons = step(scale_features, guides)
            guides = [a * fused for a in step_attended]
            attended += step_attended
            latents += step_latents
            inputs += step_inputs
            reconstructions += step_recons
        return scale_features, attended, latents, inputs, reconstructions

    def _final_logits(self, attended: list[torch.Tensor], size: list[int]) -> torch.Tensor:
        """Mean of the last step's per-scale predictions, upsampled once (averaging commutes with interpolation)."""
        last = attended[len(attended) - self.num_scales :]
        logits: list[torch.Tensor] = []
        for i, head in enumerate(self.final_heads):
            logits.append(head(last[i]))
        return resize_to(torch.stack(logits, dim=0).mean(dim=0), size, self.mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, list[torch.Tensor]]:
        size = list(x.shape[2:])
        scale_features, attended, latents, inputs, reconstructions = self._refine(x)
        if not self.training:
            return self._final_logits(attended, size)
        last = attended[len(attended) - self.num_scales :]
        low: list[torch.Tensor] = []
        for i, head in enumerate(self.initial_heads):
            low.append(head(scale_features[i]))
        for i, head in enumerate(self.final_heads):
            low.append(head(last[i]))
        # the fused prediction: the mean of the last step's, taken before upsampling (interpolation is linear)
        low.append(torch.stack(low[self.num_scales :], dim=0).float().mean(dim=0))
        if torch.jit.is_scripting():
            full = [resize_to(t, size, self.mode) for t in low]
        else:
            full = _upsample_stacked(low, size)
        return {
            "logits": [full[len(full) - 1]],
            "scale_logits": full[: len(full) - 1],
            "latents": latents,
            "reconstruction_inputs": inputs,
            "reconstructions": reconstructions,
        }

    @torch.jit.export
    def forward_with_attention(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Eval-mode logits and one [0, 1] attention map per (step, scale), step-major."""
        _, attended, _, _, _ = self._refine(x)
        maps: list[torch.Tensor] = []
        for a in attended:
            magnitude = a.abs().mean(dim=1, keepdim=True)
            flat = magnitude.flatten(1)
            low = flat.amin(dim=1).view([-1] + [1] * (magnitude.dim() - 1))
            high = flat.amax(dim=1).view([-1] + [1] * (magnitude.dim() - 1))
            maps.append((magnitude - low) / (high - low).clamp_min(1e-12))
        return self._final_logits(attended, list(x.shape[2:])), maps


@torch.jit.unused
def _upsample_stacked(low: list[torch.Tensor], size: list[int]) -> list[torch.Tensor]:
    """(Bi/tri)linear upsampling (``align_corners=False``) of same-shaped maps to ``size`` in fp32, as one separable
    product per axis on the maps stacked along the batch axis; returned as consecutive batch chunks of one
    contiguous tensor, in order (a loss can take them together without a copy).

    The same values as ``F.interpolate`` up to float rounding: per axis, interpolation is a fixed ``(out, in)``
    matrix with two non-zero weights per row. As matrix products the forward and especially the backward are much
    faster on CPU than PyTorch's interpolation kernels (measured 4x for the training heads' 9 x 2 x 6 x 16 x 16 x 8 ->
    64 x 64 x 32, forward + backward, one thread). fp32 like autocast's interpolation.
    """
    with torch.autocast(device_type=low[0].device.type, enabled=False):
        x = torch.cat([t.float() for t in low], dim=0).contiguous()
        lead = list(x.shape[:2])
        for axis in reversed(range(len(size))):
            n_in, n_out = x.shape[axis + 2], size[axis]
            if n_in == n_out:
                continue
            weights = _linear_interpolation_matrix(n_in, n_out, x.device)
            shape = list(x.shape)
            before = lead[0] * lead[1] * math.prod(shape[2 : axis + 2])
            after = math.prod(shape[axis + 3 :])
            if after == 1:
                x = torch.matmul(x.reshape(before, n_in), weights.t())
            else:
                x = torch.matmul(weights, x.reshape(before, n_in, after))
            shape[axis + 2] = n_out
            x = x.reshape(shape)
    return list(x.chunk(len(low), dim=0))


def _linear_interpolation_matrix(n_in: int, n_out: int, device: torch.device) -> torch.Tensor:
    """``(n_out, n_in)`` matrix of 1D linear interpolation with ``align_corners=False`` (PyTorch's source index
    ``(i + 0.5) * n_in / n_out - 0.5``, clamped at 0; the last input repeats past the end)."""
    target = torch.arange(n_out, dtype=torch.float32, device=device)
    source = ((target + 0.5) * (n_in / n_out) - 0.5).clamp_min(0)
    low = source.floor().long().clamp_max(n_in - 1)
    high = (low + 1).clamp_max(n_in - 1)
    frac = source - low.float()
    rows = torch.arange(n_out, device=device)
    weights = torch.zeros(n_out, n_in, device=device)
    weights.index_put_((rows, low), 1 - frac, accumulate=True)
    weights.index_put_((rows, high), frac, accumulate=True)
    return weights
