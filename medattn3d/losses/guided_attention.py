"""The training objective of the multi-scale self-guided attention network (Sinha & Dolz 2021, eq. 9-12)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss
from torch import nn


class GuidedAttentionLoss(nn.Module):
    """Segmentation terms on every scale's prediction, plus the guided and reconstruction terms, on the training
    output of :class:`medattn3d.networks.MultiScaleGuidedAttentionNet` (and optionally a term on the fused output).

    ``loss = seg_weight * sum_i seg(scale_logits_i) + fused_weight * seg(logits)
    + guided_weight * sum_{s, k} MSE(latent_{k, s}, latent_{k+1, s})
    + reconstruction_weight * sum_{k, s} MSE(input_{k, s}, reconstruction_{k, s})``

    The defaults are the authors' objective (their ``main.py``): the 8 per-scale terms with weight 1, 0.25 x guided,
    0.1 x reconstruction, and no term on the fused (averaged) prediction (``fused_weight=0``; set it to add one).
    The one remaining departure: ``seg_loss`` is DiceCE by default where the authors use plain cross-entropy;
    ``DiceCELoss(to_onehot_y=True, softmax=True, lambda_dice=0.0)`` gives theirs. Given a plain tensor (an
    eval-mode output), only ``seg_loss`` is applied.
    """

    def __init__(
        self,
        seg_loss: nn.Module | None = None,
        seg_weight: float = 1.0,
        fused_weight: float = 0.0,
        guided_weight: float = 0.25,
        reconstruction_weight: float = 0.1,
    ) -> None:
        super().__init__()
        self.seg_loss = seg_loss if seg_loss is not None else DiceCELoss(to_onehot_y=True, softmax=True)
        self.seg_weight, self.fused_weight = seg_weight, fused_weight
        self.guided_weight, self.reconstruction_weight = guided_weight, reconstruction_weight

    def forward(self, output: torch.Tensor | dict[str, list[torch.Tensor]], target: torch.Tensor) -> torch.Tensor:
        if isinstance(output, torch.Tensor):
            return self.seg_loss(output.float(), target)
        total = self.seg_weight * sum(self.seg_loss(p.float(), target) for p in output["scale_logits"])
        if self.fused_weight != 0:
            total = total + self.fused_weight * self.seg_loss(output["logits"][0].float(), target)
        latents = output["latents"]
        num_scales = len(output["scale_logits"]) // 2
        guided = torch.zeros((), device=target.device)
        for i in range(len(latents) - num_scales):  # step k vs step k+1, per scale
            guided = guided + F.mse_loss(latents[i].float(), latents[i + num_scales].float())
        reconstruction = sum(
            F.mse_loss(r.float(), x.float())
            for x, r in zip(output["reconstruction_inputs"], output["reconstructions"], strict=True)
        )
        return total + self.guided_weight * guided + self.reconstruction_weight * reconstruction
