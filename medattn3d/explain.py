"""Attention maps out of a trained network, as volumes and pictures a person can open.

For each input volume: sliding-window inference that also collects the attention maps (Attention U-Net: the gate
coefficients of every gated level, heads averaged; guided attention: the attention map of every step and scale),
blended across windows exactly like the prediction, resampled to the input grid and written as float NIfTI in
[0, 1] next to the prediction; a PNG montage (axial, coronal, sagittal through the structure: scan, contours,
attention heat map); an HTML index linking every case; and the mean attention inside the target structures versus
outside them, per map.
"""

from __future__ import annotations

import csv
import html
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import Compose, Invertd, SaveImaged
from torch import nn

from medattn3d.data.loading import source_path
from medattn3d.networks.utils import linear_mode, resize_to
from medattn3d.outputs.prediction import prediction_writer


def attention_names(network: nn.Module) -> list[str]:
    """File-name tags of the maps ``network.forward_with_attention`` returns, in its order."""
    if hasattr(network, "num_steps") and hasattr(network, "num_scales"):
        return [f"step{k + 1}_scale{s + 1}" for k in range(network.num_steps) for s in range(network.num_scales)]
    return [f"gate_level{i + 1}" for i in range(len(network.decoder))]


class AttentionPredictor(nn.Module):
    """Wrap a network so one call returns ``{"pred": logits, <map name>: map}``, every map at the input's size.

    Gate coefficients of several heads are averaged; maps are resampled (bi/trilinear) to the window size so a
    sliding-window inferer blends them like the prediction.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.names = attention_names(network)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        logits, maps = self.network.forward_with_attention(x)
        size = list(x.shape[2:])
        out = {"pred": logits}
        for name, attention in zip(self.names, maps, strict=True):
            attention = attention.mean(dim=1, keepdim=True)
            out[name] = resize_to(attention.float(), size, linear_mode(x.dim() - 2)).clamp(0.0, 1.0)
        return out


def attention_ratio(attention: np.ndarray, structure: np.ndarray) -> float:
    """Mean attention inside ``structure`` divided by the mean outside it (nan if either side is empty)."""
    inside, outside = attention[structure], attention[~structure]
    if inside.size == 0 or outside.size == 0:
        return float("nan")
    return float(inside.mean() / max(float(outside.mean()), 1e-6))


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
        for i, c in enumerate(classes):
            if np.any(pred == c):
                axes[row, 1].contour(pred == c, levels=[0.5], colors=[colours(i % 10)], linewidths=1.2)
        if label is not None:
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
    tmp = path.with_name(f".{path.stem}.tmp.png")
    figure.savefig(tmp)
    plt.close(figure)
    tmp.replace(path)
    return path


def write_index(output_dir: Path, cases: list[dict[str, Any]], names: list[str]) -> Path:
    """An HTML page (no server needed) with every case's montage, files and attention ratios."""
    rows = []
    for case in cases:
        ratios = "".join(f"<td>{case['ratios'].get(n, float('nan')):.2f}</td>" for n in names)
        links = " ".join(f'<a href="{html.escape(f)}">{html.escape(f)}</a>' for f in case["files"])
        rows.append(
            f"<tr><td><b>{html.escape(case['name'])}</b><br><small>{links}</small></td>"
            f'<td><a href="{html.escape(case["montage"])}"><img src="{html.escape(case["montage"])}" width="360" '
            f'alt="montage of {html.escape(case["name"])}"></a></td>{ratios}</tr>'
        )
    header = "".join(f"<th>inside/outside<br>{html.escape(n)}</th>" for n in names)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>medattn3d attention maps</title>
<style>body{{font-family:sans-serif;margin:2em}} td,th{{border-bottom:1px solid #ddd;padding:6px;vertical-align:top}}
table{{border-collapse:collapse}}</style></head>
<body><h1>Attention maps</h1>
<p>{len(cases)} case(s). Each montage shows axial, coronal and sagittal slices through the predicted structures:
the scan, the predicted contours (ground truth dashed when given) and the attention heat map (0 to 1). The ratio
columns give the mean attention inside the target structures divided by the mean outside.</p>
<table><tr><th>case</th><th>montage</th>{header}</tr>
{"".join(rows)}
</table>
<script>
// mark images that fail to load, and count the ones that did (read by the browser test)
window.addEventListener("load", () => {{
  let loaded = 0;
  for (const img of document.images) {{
    if (img.complete && img.naturalWidth > 0) {{ loaded += 1; }}
    else {{ img.insertAdjacentHTML("afterend", "<b class='missing'>missing image</b>"); }}
  }}
  document.body.dataset.imagesLoaded = String(loaded);
}});
</script></body></html>
"""
    path = output_dir / "index.html"
    path.write_text(page)
    return path


class AttentionExplainer:
    """Run a network over volumes and write prediction, attention NIfTI files, montages, an index and a summary.

    Args:
        network: a trained network with ``forward_with_attention`` (either medattn3d network).
        preprocessing: the inference preprocessing (``stage="infer"`` preset) the predictions are inverted through.
        inferer: a MONAI inferer (sliding window / slice inferer, possibly wrapped by ``PrecisionInferer``).
        output_dir: where everything is written.
        montage_map: which map the montage shows (default: the finest gate level / the last step's finest scale).
        label_preprocessing: the ``stage="val"`` preset, used to bring ground-truth labels into the same space.
    """

    def __init__(
        self,
        network: nn.Module,
        preprocessing: Compose,
        inferer: Callable,
        output_dir: str | Path,
        montage_map: str | None = None,
        label_preprocessing: Compose | None = None,
    ) -> None:
        self.network = network
        self.preprocessing = preprocessing
        self.inferer = inferer
        self.output_dir = Path(output_dir)
        self.predictor = AttentionPredictor(network)
        names = self.predictor.names
        default = "step{}_scale1".format(getattr(network, "num_steps", 1)) if names[0].startswith("step") else names[0]
        self.montage_map = montage_map or default
        self.label_preprocessing = label_preprocessing

    def _writers(self) -> Compose:
        names = self.predictor.names
        steps: list[Any] = [Invertd(names, transform=self.preprocessing, orig_keys="image", nearest_interp=False)]
        steps += [
            SaveImaged(
                name,
                output_dir=str(self.output_dir),
                output_postfix=f"attention_{name}",
                resample=False,
                separate_folder=False,
                output_dtype=np.float32,
                print_log=False,
            )
            for name in names
        ]
        return Compose(steps)

    def explain_case(self, image_path: str, label_path: str | None = None) -> dict[str, Any]:
        """Everything for one volume; returns its summary (files, attention ratios)."""
        self.network.eval()
        data = self.preprocessing({"image": image_path})
        with torch.no_grad():
            outputs = self.inferer(data["image"][None].to(next(self.network.parameters()).device), self.predictor)
        names = self.predictor.names
        data["pred"] = outputs["pred"][0].cpu()
        for name in names:
            data[name] = outputs[name][0].cpu().clamp(0.0, 1.0)
        image = np.asarray(data["image"][0], dtype=np.float32)
        prediction = np.asarray(torch.argmax(data["pred"], dim=0))
        maps = {name: np.asarray(data[name][0]) for name in names}
        label = None
        if label_path is not None and self.label_preprocessing is not None:
            labelled = self.label_preprocessing({"image": image_path, "label": label_path})
            label = np.asarray(labelled["label"][0]).round().astype(np.int64)
        structure = (label if label is not None else prediction) > 0
        ratios = {name: attention_ratio(maps[name], structure) for name in names}

        self.output_dir.mkdir(parents=True, exist_ok=True)
        prediction_writer(self.preprocessing, self.output_dir)(dict(data))
        self._writers()(data)
        stem = Path(source_path(data["image"])).name
        for suffix in (".nii.gz", ".nii", ".nrrd", ".mha", ".dcm"):
            stem = stem.removesuffix(suffix)
        montage = write_montage(
            image,
            prediction,
            maps[self.montage_map],
            self.output_dir / f"{stem}_montage.png",
            title=f"{stem}: attention {self.montage_map}",
            label=label,
            spacing=[float(v) for v in data["image"].pixdim[:3]],
        )
        files = sorted(p.name for p in self.output_dir.glob(f"{stem}_*.nii.gz"))
        return {
            "name": stem,
            "montage": montage.name,
            "files": files,
            "ratios": ratios,
            "structure": "ground truth" if label is not None else "prediction",
        }

    def run(self, image_paths: Sequence[str], label_paths: Sequence[str | None] | None = None) -> dict[str, Any]:
        """Explain every volume; write ``index.html`` and ``attention_summary.{csv,json}``; return the summary."""
        labels = list(label_paths) if label_paths else [None] * len(image_paths)
        cases = [self.explain_case(str(p), lab) for p, lab in zip(image_paths, labels, strict=True)]
        names = self.predictor.names
        mean_ratios = {n: float(np.nanmean([c["ratios"][n] for c in cases])) for n in names}
        write_index(self.output_dir, cases, names)
        with open(self.output_dir / "attention_summary.csv", "w", newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow(["case", "structure", *names])
            for case in cases:
                writer.writerow([case["name"], case["structure"], *(f"{case['ratios'][n]:.4f}" for n in names)])
            writer.writerow(["mean", "", *(f"{mean_ratios[n]:.4f}" for n in names)])
        summary = {
            "cases": cases,
            "mean_inside_outside_ratio": mean_ratios,
            "index": str(self.output_dir / "index.html"),
        }
        (self.output_dir / "attention_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        print("attention inside / outside the target structures (mean over cases):")
        for name in names:
            print(f"  {name:<16s} {mean_ratios[name]:.2f}")
        print(f"index: {self.output_dir / 'index.html'}")
        return summary
