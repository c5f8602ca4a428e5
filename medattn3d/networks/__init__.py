"""The medattn3d networks: models only, no I/O or training code."""

from medattn3d.networks.attention_unet import AttentionUNet
from medattn3d.networks.ms_guided_attention import MultiScaleGuidedAttentionNet
from medattn3d.networks.registry import NETWORKS, PRESETS, get_network, required_input_multiple

__all__ = [
    "NETWORKS",
    "PRESETS",
    "AttentionUNet",
    "MultiScaleGuidedAttentionNet",
    "get_network",
    "required_input_multiple",
]
