"""Reusable building blocks of the medattn3d networks."""

from medattn3d.networks.blocks.attention_gate import GridAttentionGate, IdentityGate, MultiHeadGridAttention
from medattn3d.networks.blocks.conv import DoubleConv
from medattn3d.networks.blocks.dual_attention import AttentionBranch, ChannelAttention, PositionAttention
from medattn3d.networks.blocks.guided_attention import (
    GuidedAttentionModule,
    GuidedRefinementStep,
    SemanticEncoderDecoder,
)

__all__ = [
    "AttentionBranch",
    "ChannelAttention",
    "DoubleConv",
    "GridAttentionGate",
    "GuidedAttentionModule",
    "GuidedRefinementStep",
    "IdentityGate",
    "MultiHeadGridAttention",
    "PositionAttention",
    "SemanticEncoderDecoder",
]
