"""Training losses. The Attention U-Net trains with MONAI's ``DeepSupervisionLoss(DiceCELoss(...))`` directly;
the guided-attention network's full objective is :class:`GuidedAttentionLoss`."""

from medattn3d.losses.guided_attention import GuidedAttentionLoss

__all__ = ["GuidedAttentionLoss"]
