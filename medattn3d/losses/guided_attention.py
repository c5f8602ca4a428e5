"""The training objective of the multi-scale self-guided attention network (Sinha & Dolz 2021, eq. 9-12)."""

from __future__ import annotations

from typing import Any

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

    ``loss`` must pass :func:`stackable_dice_ce`. MONAI's formulas: ``tp = sum(p * y)``, ``fp = sum(p) - tp``,
    ``fn = sum(y) - tp`` over the spatial axes, Dice ``1 - (2 tp + smooth_nr) / (2 (tp + fp / 2 + fn / 2) +
    smooth_dr)`` averaged over samples and classes (background dropped if so set), cross-entropy averaged over
    voxels. Computed by :class:`_StackedDiceCE`: one log-softmax whose exponent is the softmax, the true class's
    (log-)probability gathered instead of a one-hot product, the label map counted once, and a closed-form backward
    (two passes over the predictions instead of autograd's nine). Predictions that are consecutive batch chunks of
    one contiguous tensor (``MultiScaleGuidedAttentionNet``'s training outputs) are read in place; others are
    stacked first.
    """
    n = len(predictions)
    batch, classes = predictions[0].shape[:2]
    stacked = _consecutive_chunks(predictions)
    if stacked is None:
        stacked = torch.cat([p.float() for p in predictions], dim=0)
    logits = stacked.float().reshape(n, batch, classes, -1)
    labels = target.reshape(batch, 1, -1).long()
    dice = loss.dice
    return _StackedDiceCE.apply(
        logits,
        labels,
        dice.include_background,
        float(dice.smooth_nr),
        float(dice.smooth_dr),
        float(loss.lambda_dice),
        float(loss.lambda_ce),
    )


class _StackedDiceCE(torch.autograd.Function):
    """Per-prediction DiceCE of ``logits`` ``(n, B, C, voxels)`` against ``labels`` ``(B, 1, voxels)``; returns
    ``(n,)``. Backward in closed form: with ``s`` the softmax, ``a_c = dL/d(sum_v s_c)`` and ``b_c = dL/d tp_c``
    per sample and class and ``g`` the cross-entropy's weight per voxel,
    ``dL/dx_c = s_c (a_c + g - sum_k s_k a_k - s_y b_y) + [c = y] (s_y b_y - g)``."""

    @staticmethod
    def forward(
        ctx: Any,
        logits: torch.Tensor,
        labels: torch.Tensor,
        include_background: bool,
        smooth_nr: float,
        smooth_dr: float,
        lambda_dice: float,
        lambda_ce: float,
    ) -> torch.Tensor:
        n, batch, classes, voxels = logits.shape
        index = labels.unsqueeze(0).expand(n, batch, 1, voxels)
        probs = torch.log_softmax(logits, dim=2)
        true_log_probs = probs.gather(2, index)  # (n, B, 1, voxels)
        probs.exp_()
        true_probs = true_log_probs.exp()
        tp = logits.new_zeros(n, batch, classes).scatter_add_(2, index[:, :, 0], true_probs[:, :, 0])
        ground = logits.new_zeros(batch, classes).scatter_add_(1, labels[:, 0], logits.new_ones(labels[:, 0].shape))
        pred = probs.sum(dim=-1)
        first = 0 if include_background else 1
        tp_k, pred_k, ground_k = tp[..., first:], pred[..., first:], ground[..., first:]
        fp, fn = pred_k - tp_k, ground_k - tp_k
        numerator = 2 * tp_k + smooth_nr
        denominator = 2 * (tp_k + 0.5 * fp + 0.5 * fn) + smooth_dr
        dice = (1 - numerator / denominator).mean(dim=(1, 2))
        cross_entropy = -true_log_probs.mean(dim=(1, 2, 3))
        ctx.save_for_backward(probs, index, true_probs, numerator, denominator)
        ctx.first, ctx.lambda_dice, ctx.lambda_ce = first, lambda_dice, lambda_ce
        return lambda_dice * dice + lambda_ce * cross_entropy

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_values: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        probs, index, true_probs, numerator, denominator = ctx.saved_tensors
        n, batch, classes, voxels = probs.shape
        first = ctx.first
        dice_scale = (grad_values * ctx.lambda_dice / (batch * (classes - first))).view(n, 1, 1)
        ce_scale = (grad_values * ctx.lambda_ce / (batch * voxels)).view(n, 1, 1, 1)
        a = probs.new_zeros(n, batch, classes)
        b = probs.new_zeros(n, batch, classes)
        a[..., first:] = dice_scale * numerator / denominator.square()  # d(1 - N / D) / d pred, D = pred + ...
        b[..., first:] = -2 * dice_scale / denominator  # d(1 - N / D) / d tp (tp's share of D cancels)
        b_true = b.gather(2, index[:, :, 0]).unsqueeze(2) * true_probs  # s_y b_y, (n, B, 1, voxels)
        shift = torch.matmul(a.unsqueeze(2), probs)  # sum_k s_k a_k, (n, B, 1, voxels)
        shift.add_(b_true)
        grad = (a.unsqueeze(-1) + ce_scale).sub(shift).mul_(probs)
        grad.scatter_add_(2, index, b_true - ce_scale)
        return grad, None, None, None, None, None, None


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
    flat = base.reshape(-1)
    count = first.numel() * len(tensors)
    return flat if flat.numel() == count else flat[:count]  # a slice's backward would zero-fill the whole base
