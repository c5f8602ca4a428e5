"""How concentrated a saliency map is on the target: mean inside a structure over mean outside it."""

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
