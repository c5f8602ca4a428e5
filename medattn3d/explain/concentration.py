"""How concentrated a saliency map is on the target: mean inside a structure over mean outside it, and how well the
map ranks the structure's voxels above the rest (AUC: scale-free, so maps with and without a zero floor compare)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def attention_ratio(attention: np.ndarray, structure: np.ndarray) -> float:
    """Mean attention inside ``structure`` divided by the mean outside it (nan if either side is empty)."""
    inside, outside = attention[structure], attention[~structure]
    if inside.size == 0 or outside.size == 0:
        return float("nan")
    return float(inside.mean() / max(float(outside.mean()), 1e-6))


def class_ratios(attention: np.ndarray, labels: np.ndarray, classes: Iterable[int]) -> dict[int, float]:
    """:func:`attention_ratio` of every class ``c``: inside = voxels labelled ``c``, outside = all the others."""
    return {int(c): attention_ratio(attention, labels == c) for c in classes}


def separation_auc(saliency: np.ndarray, structure: np.ndarray) -> float:
    """Probability that a random voxel inside ``structure`` has a higher saliency than a random voxel outside it
    (ties count half): the area under the ROC curve of the map as a detector of the structure. 0.5 = no
    preference, 1 = every inside voxel above every outside one. Unlike :func:`attention_ratio` it does not reward
    a map for being exactly zero outside (Grad-CAM's ReLU) against one that never reaches zero (a sigmoid gate)."""
    inside = int(structure.sum())
    outside = structure.size - inside
    if inside == 0 or outside == 0:
        return float("nan")
    _, position, counts = np.unique(saliency.ravel(), return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[position]  # 1-based ranks, ties get their average
    return float((ranks[structure.ravel()].sum() - inside * (inside + 1) / 2) / (inside * outside))
