"""The four bundle templates: one per architecture and dimensionality, each an architecture (network, loss, memory
model, what its input sizes must be multiples of) plus ``spatial_dims``. Config files are composed from these by
:mod:`medattn3d.planning.configs`; nothing here is copied between 2D and 3D.

Memory models (training, per patch, fp32, activations saved for backward; measured once on CPU with
``torch.autograd.graph.saved_tensors_hooks`` summing the storage of every saved tensor over one forward + loss, with
4 classes, and kept here as constants; peak process memory is about 1.5x this):

- Attention U-Net (widths 16..256, deep supervision): 60 bytes per feature-map element, i.e.
  ``60 * sum_l voxels_l * channels_l`` over the levels (measured 54-69 B at 64x64x32, 96x96x48, 128^2, 256^2), so
  anisotropic strides that keep more voxels at depth are accounted for.
- Multi-scale guided attention (ResNet-18, 2 steps): linear in the patch's voxels (position attention runs through
  PyTorch's fused attention, which keeps no N x N matrix): 3D (32 features) 1445 B/voxel + 87 MiB, 2D (64 features)
  8614 B/voxel + 107 MiB (fitted to 32^3, 64x64x32, 64^3 and 128^2, 256^2 within 1 %).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

ATTENTION_UNET_WIDTHS = (16, 32, 64, 128, 256)
BYTES_PER_FEATURE = 60.0
GUIDED_MEMORY = {3: (1445.0, 87 * 2**20), 2: (8614.0, 107 * 2**20)}  # bytes per voxel, constant bytes per sample
GUIDED_FEATURES = {3: 32, 2: 64}


class Architecture:
    """What planning and the config generator need to know about one network family."""

    name = ""
    title = ""
    reference = ""
    learning_rate = 2e-3
    topology_keys: tuple[str, ...] = ()

    def topology(self, roi: Sequence[int], spacing: Sequence[float], spatial_dims: int) -> dict[str, Any]:
        """Planned network settings (config values) for a patch of ``roi`` voxels at ``spacing``."""
        return {}

    def topology_rule(self, key: str) -> str:
        return ""

    def multiples(self, settings: Mapping[str, Any], spatial_dims: int) -> list[int]:
        """What every patch size must be a multiple of, per axis, for ``settings``."""
        raise NotImplementedError

    def memory(self, roi: Sequence[int], settings: Mapping[str, Any], spatial_dims: int) -> float:
        """Estimated training memory of one patch, bytes (see the module docstring)."""
        raise NotImplementedError

    def network_def(self, spatial_dims: int, values: Mapping[str, Any]) -> dict[str, Any]:
        """The ``network_def`` config (facts referenced by ``@id``; topology values as planned)."""
        raise NotImplementedError

    def loss(self) -> dict[str, Any]:
        raise NotImplementedError

    def describe(self, spatial_dims: int) -> str:
        raise NotImplementedError


class AttentionUNetArchitecture(Architecture):
    name = "attention_unet"
    title = "Attention U-Net"
    reference = "Oktay O. et al., Attention U-Net: Learning Where to Look for the Pancreas, MIDL 2018, arXiv:1804.03999"
    topology_keys = ("strides", "channels")

    def topology(self, roi: Sequence[int], spacing: Sequence[float], spatial_dims: int) -> dict[str, Any]:
        from medattn3d.planning.rules import pooling_strides

        strides = pooling_strides(roi, spacing, len(ATTENTION_UNET_WIDTHS) - 1)
        while len(strides) < 2:  # the network needs 3 levels: pool what is left, even below 4 voxels
            strides.append([2 if s >= 2 else 1 for s in _level_size(roi, strides)])
        return {"strides": strides, "channels": list(ATTENTION_UNET_WIDTHS[: len(strides) + 1])}

    def topology_rule(self, key: str) -> str:
        if key == "strides":
            return "per level and axis: 2 while the axis keeps >= 4 voxels and its spacing is within 2x of the finest"
        return "16, 32, 64, ... one width per level (at most 5 levels)"

    def multiples(self, settings: Mapping[str, Any], spatial_dims: int) -> list[int]:
        strides = settings["strides"]
        per_axis = [[int(s)] * spatial_dims if isinstance(s, int) else [int(v) for v in s] for s in strides]
        return [math.prod(s[a] for s in per_axis) for a in range(spatial_dims)]

    def memory(self, roi: Sequence[int], settings: Mapping[str, Any], spatial_dims: int) -> float:
        strides = settings["strides"]
        per_axis = [[int(s)] * spatial_dims if isinstance(s, int) else [int(v) for v in s] for s in strides]
        sizes = [list(roi)]
        for stride in per_axis:
            sizes.append([max(1, a // s) for a, s in zip(sizes[-1], stride, strict=True)])
        elements = sum(math.prod(size) * width for size, width in zip(sizes, settings["channels"], strict=False))
        return BYTES_PER_FEATURE * elements

    def network_def(self, spatial_dims: int, values: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "_target_": "medattn3d.networks.AttentionUNet",
            "spatial_dims": "@spatial_dims",
            "in_channels": "@in_channels",
            "out_channels": "@num_classes",
            "channels": values["channels"],
            "strides": values["strides"],
            "deep_supervision": True,
        }

    def loss(self) -> dict[str, Any]:
        return {
            "_target_": "DeepSupervisionLoss",
            "loss": {"_target_": "DiceCELoss", "to_onehot_y": True, "softmax": True},
        }

    def describe(self, spatial_dims: int) -> str:
        return (
            f"{spatial_dims}D Attention U-Net (Oktay et al. 2018): additive grid attention gates on the skip "
            "connections, deep supervision, DiceCE loss"
        )


def _level_size(roi: Sequence[int], strides: Sequence[Sequence[int]]) -> list[int]:
    size = list(roi)
    for stride in strides:
        size = [a // s for a, s in zip(size, stride, strict=True)]
    return size


@functools.lru_cache(maxsize=4)
def _guided_multiples(spatial_dims: int) -> tuple[int, ...]:
    """The input-size multiples the guided network itself declares (built once per dimensionality)."""
    from medattn3d.networks import MultiScaleGuidedAttentionNet

    net = MultiScaleGuidedAttentionNet(
        spatial_dims, 1, 2, backbone="resnet10", feature_channels=GUIDED_FEATURES[spatial_dims], num_steps=1
    )
    return tuple(int(m) for m in net.multiples)


class GuidedAttentionArchitecture(Architecture):
    name = "ms_guided_attention"
    title = "Multi-scale self-guided attention network"
    reference = (
        "Sinha A., Dolz J., Multi-scale self-guided attention for medical image segmentation, IEEE JBHI 25(1) 2021, "
        "arXiv:1906.02849"
    )

    def multiples(self, settings: Mapping[str, Any], spatial_dims: int) -> list[int]:
        return list(_guided_multiples(spatial_dims))

    def memory(self, roi: Sequence[int], settings: Mapping[str, Any], spatial_dims: int) -> float:
        per_voxel, constant = GUIDED_MEMORY[spatial_dims]
        return per_voxel * math.prod(roi) + constant

    def network_def(self, spatial_dims: int, values: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "_target_": "medattn3d.networks.MultiScaleGuidedAttentionNet",
            "spatial_dims": "@spatial_dims",
            "in_channels": "@in_channels",
            "out_channels": "@num_classes",
            "backbone": "resnet18",
            "feature_channels": GUIDED_FEATURES[spatial_dims],
            "num_steps": 2,
        }

    def loss(self) -> dict[str, Any]:
        return {
            "_target_": "medattn3d.losses.GuidedAttentionLoss",
            "seg_loss": {"_target_": "DiceCELoss", "to_onehot_y": True, "softmax": True},
            "fused_weight": 1.0,
            "guided_weight": 0.25,
            "reconstruction_weight": 0.1,
        }

    def describe(self, spatial_dims: int) -> str:
        return (
            f"{spatial_dims}D multi-scale self-guided attention network (Sinha & Dolz 2021): ResNet-18 features at "
            "four scales, position and channel attention guided by a shared encoder-decoder over two steps; DiceCE "
            "on every scale and on the averaged prediction, plus the guided and reconstruction losses"
        )


@dataclass(frozen=True)
class Template:
    """A bundle template: an architecture in 2D or 3D."""

    name: str
    architecture: Architecture
    spatial_dims: int


ARCHITECTURES = {a.name: a for a in (AttentionUNetArchitecture(), GuidedAttentionArchitecture())}
TEMPLATES = {
    f"{arch}_{dims}d": Template(f"{arch}_{dims}d", ARCHITECTURES[arch], dims)
    for arch in ("attention_unet", "ms_guided_attention")
    for dims in (3, 2)
}
