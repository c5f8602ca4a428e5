"""Short network names for configs and the command line, and presets that reproduce the papers' released models."""

from __future__ import annotations

from typing import Any

from torch import nn

from medattn3d.networks.attention_unet import AttentionUNet
from medattn3d.networks.ms_guided_attention import MultiScaleGuidedAttentionNet

NETWORKS: dict[str, type[nn.Module]] = {
    "attention_unet": AttentionUNet,
    "ms_guided_attention": MultiScaleGuidedAttentionNet,
}

# name: (class, constructor arguments). Each builds the authors' released model with only spatial_dims,
# in_channels and out_channels given (any other keyword overrides the preset).
PRESETS: dict[str, tuple[type[nn.Module], dict[str, Any]]] = {
    # Oktay et al. 2018, the authors' unet_CT_multi_att_dsv_3D: widths 64..1024 / 4, two gates per level, their
    # decoder (full coarse width concatenated), multi-scale output fusion, biased convs, their init
    "attention_unet_oktay2018": (
        AttentionUNet,
        {
            "channels": (16, 32, 64, 128, 256),
            "strides": (2, 2, 2, 2),
            "attention_heads": 2,
            "up_projection": False,
            "output_fusion": True,
            "conv_bias": True,
            "init": "authors",
        },
    ),
    # Sinha & Dolz 2021, the authors' DAF_stack: ResNeXt-101 32x8d trained from scratch, C = 64, two refinement
    # steps, PReLU, Xavier-normal convs and BatchNorm weights ~ N(1, 0.02)
    "ms_guided_attention_sinha2021": (
        MultiScaleGuidedAttentionNet,
        {
            "backbone": "resnext101_32x8d",
            "feature_channels": 64,
            "num_steps": 2,
            "act": "prelu",
            "init": "authors",
        },
    ),
}


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def _resolve(name: str, kwargs: dict[str, Any]) -> tuple[type[nn.Module], dict[str, Any]]:
    """The class and full constructor arguments behind ``name`` (a network or a preset) with ``kwargs`` on top."""
    key = _key(name)
    if key in NETWORKS:
        return NETWORKS[key], dict(kwargs)
    if key in PRESETS:
        cls, preset = PRESETS[key]
        return cls, {**preset, **kwargs}
    available = ", ".join(sorted(NETWORKS) + sorted(PRESETS))
    raise ValueError(f"unknown network {name!r}; available: {available}")


def get_network(name: str, **kwargs: Any) -> nn.Module:
    """Build the network or preset registered as ``name`` (case and ``-``/``_`` insensitive) with ``kwargs``.

    ``get_network("attention_unet_oktay2018", spatial_dims=3, in_channels=1, out_channels=2)`` is Oktay et al.'s
    released model, ``"ms_guided_attention_sinha2021"`` Sinha & Dolz's; keywords given override the preset.
    """
    cls, arguments = _resolve(name, kwargs)
    return cls(**arguments)


def required_input_multiple(name: str, **kwargs: Any) -> list[int]:
    """Per-axis multiple the input sizes of ``get_network(name, **kwargs)`` must have, without building it.

    ``kwargs`` are the network's constructor arguments (``spatial_dims`` at least); e.g.
    ``required_input_multiple("attention_unet", spatial_dims=3, strides=[[2, 2, 1], 2, 2, 2])`` is ``[16, 16, 8]``.
    """
    cls, arguments = _resolve(name, kwargs)
    return cls.required_input_multiple(**arguments)
