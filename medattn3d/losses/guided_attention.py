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

    With a MONAI ``DiceCELoss`` of softmax, one-hot labels and per-sample Dice (``batch=False``, mean reduction, no
    class weights, ignore index, label smoothing or other activation), the segmentation terms are computed together
    by :func:`stacked_dice_ce` (one log-softmax and one one-hot pass over all predictions, the same values and
    gradients); any other ``seg_loss`` is called once per prediction.
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
        predictions = list(output["scale_logits"])
        weights = [self.seg_weight] * len(predictions)
        if self.fused_weight != 0:
            predictions.append(output["logits"][0])
            weights.append(self.fused_weight)
        total = self._segmentation(predictions, weights, target)
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

    def _segmentation(
        self, predictions: list[torch.Tensor], weights: list[float], target: torch.Tensor
    ) -> torch.Tensor:
        """``sum_i weights[i] * seg_loss(predictions[i], target)``, all predictions at once where the loss allows."""
        if stackable_dice_ce(self.seg_loss, predictions, target):
            values = stacked_dice_ce(self.seg_loss, predictions, target)
            return (values * torch.tensor(weights, dtype=values.dtype, device=values.device)).sum()
        return sum(w * self.seg_loss(p.float(), target) for w, p in zip(weights, predictions, strict=True))


def stackable_dice_ce(loss: nn.Module, predictions: list[torch.Tensor], target: torch.Tensor) -> bool:
    """Whether :func:`stacked_dice_ce` computes ``loss`` exactly for these predictions and label map: a MONAI
    ``DiceCELoss`` with softmax, one-hot labels, per-sample Dice, mean reductions and none of its other options, and
    same-shaped multi-class predictions with a one-channel label map of their batch and size."""
    if type(loss) is not DiceCELoss or not predictions:
        return False
    dice, ce = loss.dice, loss.cross_entropy
    settings = (
        dice.softmax and dice.to_onehot_y and not dice.sigmoid and dice.other_act is None and not dice.squared_pred
    )
    settings = settings and not dice.jaccard and not dice.batch and dice.ignore_index is None
    settings = settings and not getattr(dice, "soft_label", False) and dice.class_weight is None
    settings = settings and dice.reduction == "mean" and ce.reduction == "mean" and ce.weight is None
    settings = settings and ce.label_smoothing == 0.0
    shape = predictions[0].shape
    shapes = all(p.shape == shape for p in predictions) and len(shape) >= 3 and shape[1] > 1
    return bool(settings and shapes and target.shape == (shape[0], 1, *shape[2:]))


def stacked_dice_ce(loss: DiceCELoss, predictions: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """``torch.stack([loss(p, target) for p in predictions])`` (fp32) in one pass over all predictions.

    ``loss`` must pass :func:`stackable_dice_ce`. The label map is one-hot counted once; the predictions share one
    log-softmax, whose exponent gives the softmax, and the true class's (log-)probability is gathered instead of
    multiplying by a one-hot map. MONAI's formulas: ``tp = sum(p * y)``, ``fp = sum(p) - tp``, ``fn = sum(y) - tp``
    over the spatial axes, Dice ``1 - (2 tp + smooth_nr) / (2 (tp + fp / 2 + fn / 2) + smooth_dr)`` averaged over
    samples and classes (background dropped if so set), cross-entropy averaged over voxels. Predictions that are
    consecutive batch chunks of one contiguous tensor (``MultiScaleGuidedAttentionNet``'s training outputs) are
    read in place; others are stacked first.
    """
    n = len(predictions)
    batch, classes = predictions[0].shape[:2]
    stacked = _consecutive_chunks(predictions)
    if stacked is None:
        stacked = torch.cat([p.float() for p in predictions], dim=0)
    logits = stacked.float().reshape(n, batch, classes, -1)
    labels = target.reshape(batch, 1, -1).long()
    log_probs = torch.log_softmax(logits, dim=2)
    probs = log_probs.exp()
    index = labels.unsqueeze(0).expand(n, batch, 1, labels.shape[-1])
    true_log_probs = log_probs.gather(2, index)  # (n, B, 1, voxels)
    tp = logits.new_zeros(n, batch, classes).scatter_add_(2, index[:, :, 0], true_log_probs[:, :, 0].exp())
    with torch.no_grad():
        ground = logits.new_zeros(batch, classes).scatter_add_(1, labels[:, 0], logits.new_ones(labels[:, 0].shape))
    pred = probs.sum(dim=-1)
    if not loss.dice.include_background:
        tp, pred, ground = tp[..., 1:], pred[..., 1:], ground[..., 1:]
    fp, fn = pred - tp, ground - tp
    dice = 1 - (2 * tp + loss.dice.smooth_nr) / (2 * (tp + 0.5 * fp + 0.5 * fn) + loss.dice.smooth_dr)
    cross_entropy = -true_log_probs.mean(dim=(1, 2, 3))
    return loss.lambda_dice * dice.mean(dim=(1, 2)) + loss.lambda_ce * cross_entropy


def _consecutive_chunks(tensors: list[torch.Tensor]) -> torch.Tensor | None:
    """The stack of ``tensors`` as a view of the contiguous tensor whose consecutive batch chunks they are (from its
    start, in order), or ``None``."""
    base = tensors[0]._base
    first = tensors[0]
    if base is None or not base.is_contiguous() or base.numel() < first.numel() * len(tensors):
        return None
    step = first.numel() * first.element_size()
    for i, t in enumerate(tensors):
        same = t._base is base and t.is_contiguous() and t.shape == first.shape and t.dtype == first.dtype
        if not same or t.data_ptr() != base.data_ptr() + i * step:
            return None
    return base.reshape(-1)[: first.numel() * len(tensors)]
