"""Static pictures of an explanation: one PNG montage per case (three planes: scan, contours, attention)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medattn3d.outputs.atomic import atomic_path


def _slice_through(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    return np.take(volume, index, axis=axis).T  # rows: the next axis, shown with origin="lower"


def write_montage(
    image: np.ndarray,
    prediction: np.ndarray,
    attention: np.ndarray,
    path: Path,
    title: str,
    label: np.ndarray | None = None,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
) -> Path:
    """Axial, coronal and sagittal slices through the predicted structure's centre: the scan, the scan with the
    predicted contours (and the ground truth dashed), and the scan with the attention heat map.

    Volumes are in RAS voxel order (the presets reorient to RAS); axial and coronal views follow the radiological
    convention (the patient's right on the viewer's left), and pixels keep the voxel spacing's aspect ratio."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    foreground = np.argwhere(prediction > 0)
    centre = foreground.mean(0).round().astype(int) if len(foreground) else np.array(image.shape) // 2
    views = (("axial", 2), ("coronal", 1), ("sagittal", 0))
    shown_axes = {2: (0, 1), 1: (0, 2), 0: (1, 2)}  # (columns, rows) of each view
    figure, axes = plt.subplots(3, 3, figsize=(9, 9), dpi=80)
    classes = [c for c in np.unique(prediction) if c > 0]
    colours = plt.get_cmap("tab10")
    for row, (view, axis) in enumerate(views):
        index = int(np.clip(centre[axis], 0, image.shape[axis] - 1))
        scan = _slice_through(image, axis, index)
        columns, rows = shown_axes[axis]
        aspect = float(spacing[rows]) / float(spacing[columns])
        for col in range(3):
            axes[row, col].imshow(scan, cmap="gray", origin="lower", vmin=0.0, vmax=1.0, aspect=aspect)
            axes[row, col].set_xticks([])
            axes[row, col].set_yticks([])
            if axis != 0:  # radiological convention: patient's right (RAS +x) on the viewer's left
                axes[row, col].invert_xaxis()
        pred = _slice_through(prediction, axis, index)
        outline = min(pred.shape) >= 2  # a one-slice volume seen edge-on is one line of voxels: nothing to outline
        for i, c in enumerate(classes):
            if outline and np.any(pred == c):
                axes[row, 1].contour(pred == c, levels=[0.5], colors=[colours(i % 10)], linewidths=1.2)
        if label is not None and outline:
            truth = _slice_through(label, axis, index)
            for c in [c for c in np.unique(truth) if c > 0]:
                axes[row, 1].contour(truth == c, levels=[0.5], colors="white", linewidths=0.8, linestyles="dashed")
        heat = axes[row, 2].imshow(
            _slice_through(attention, axis, index),
            cmap="inferno",
            origin="lower",
            vmin=0.0,
            vmax=1.0,
            alpha=0.6,
            aspect=aspect,
        )
        axes[row, 0].set_ylabel(f"{view} {index}")
    axes[0, 0].set_title("scan")
    axes[0, 1].set_title("prediction" + (" (truth dashed)" if label is not None else ""))
    axes[0, 2].set_title("attention")
    figure.colorbar(heat, ax=axes[:, 2], fraction=0.05, label="attention")
    figure.suptitle(title)
    try:
        with atomic_path(path) as tmp:
            figure.savefig(tmp, format="png")
    finally:
        plt.close(figure)
    return path
