"""Attention maps out of a network: which maps it has, and one call that returns them with the prediction.

Extraction knows nothing about files or pictures (``rendering`` does that); it only turns
``network.forward_with_attention`` into named maps on the input's grid that a MONAI inferer can blend.
"""

from __future__ import annotations

import torch
from torch import nn

from medattn3d.networks.utils import linear_mode, resize_to


def attention_names(network: nn.Module) -> list[str]:
    """Names (file-name tags) of the maps ``network.forward_with_attention`` returns, in its order.

    Both medattn3d networks declare them (``attention_map_names()``); a network that does not (an older or
    third-party one with ``forward_with_attention``) gets names from its structure (guided attention: one map per
    step and scale; Attention U-Net: one per gated decoder level, finest first).
    """
    declared = getattr(network, "attention_map_names", None)
    if declared is not None:
        return list(declared() if callable(declared) else declared)
    if hasattr(network, "num_steps") and hasattr(network, "num_scales"):
        return [f"step{k + 1}_scale{s + 1}" for k in range(network.num_steps) for s in range(network.num_scales)]
    return [f"gate_level{i + 1}" for i in range(len(network.decoder))]


def default_map(names: list[str]) -> str:
    """The map a montage shows by default: the finest gate level, or the last step's finest scale (the one the
    guided-attention prediction is built from)."""
    steps = [n for n in names if n.startswith("step") and n.endswith("_scale1")]
    return steps[-1] if steps else names[0]


class AttentionPredictor(nn.Module):
    """Wrap a network so one call returns ``{"pred": logits, <map name>: map}``, every map at the input's size.

    Gate coefficients of several heads are averaged; maps are resampled (bi/trilinear) to the window size so a
    sliding-window inferer blends them exactly like the prediction.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.names = attention_names(network)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        logits, maps = self.network.forward_with_attention(x)
        if len(maps) != len(self.names):
            raise ValueError(f"the network returned {len(maps)} attention maps but names {len(self.names)}")
        size = list(x.shape[2:])
        out = {"pred": logits}
        for name, attention in zip(self.names, maps, strict=True):
            attention = attention.mean(dim=1, keepdim=True)
            out[name] = resize_to(attention.float(), size, linear_mode(x.dim() - 2)).clamp(0.0, 1.0)
        return out
