"""Short network names for configs and the command line."""

from __future__ import annotations

from typing import Any

from torch import nn

from medattn3d.networks.attention_unet import AttentionUNet
from medattn3d.networks.ms_guided_attention import MultiScaleGuidedAttentionNet

NETWORKS: dict[str, type[nn.Module]] = {
    "attention_unet": AttentionUNet,
    "ms_guided_attention": MultiScaleGuidedAttentionNet,
}


def get_network(name: str, **kwargs: Any) -> nn.Module:
    """Build the network registered as ``name`` (case and ``-``/``_`` insensitive) with constructor ``kwargs``."""
    key = name.strip().lower().replace("-", "_")
    if key not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; available: {', '.join(sorted(NETWORKS))}")
    return NETWORKS[key](**kwargs)
