"""Explain a trained network over volumes: prediction, attention maps in the input's geometry, pictures, viewer.

For each input volume: sliding-window inference that also collects the attention maps (``extraction``), blended
across windows exactly like the prediction; the prediction written by the package's prediction writer; the maps
inverted through the same preprocessing onto the input grid and written as float NIfTI in [0, 1]; a PNG montage
(``montage``); the volumes for the in-page viewer (``viewer``); and the mean attention inside the target structures
versus outside them, per map (``concentration``). ``run`` then writes the index page and the summary tables and
returns the summary; printing it is the caller's business (:func:`summary_lines`).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.transforms import Compose
from torch import nn

from medattn3d.explain.concentration import attention_ratio
from medattn3d.explain.extraction import AttentionPredictor, default_map
from medattn3d.explain.montage import write_montage
from medattn3d.explain.page import write_index
from medattn3d.explain.viewer import DEFAULT_MAX_VOXELS, Layer, copy_viewer_assets, write_case_layers
from medattn3d.outputs.atomic import atomic_path, atomic_write_text
from medattn3d.outputs.naming import case_output_names
from medattn3d.outputs.prediction import restore_chain, write_case
from medattn3d.outputs.tables import value_name_map


def _first(path: str | Sequence[str]) -> str:
    """The file that names a case: the path itself, or the first channel's file of a multi-file image entry."""
    return str(path) if isinstance(path, (str, Path)) else str(path[0])


def labels_for(image_paths: Sequence[str | Sequence[str]], datalist: Sequence[Mapping[str, Any]]) -> list[str | None]:
    """The ground truth of each image from a MONAI datalist (``image``/``label`` items), matched by the image's
    file (paths resolved, so a relative or ``..`` path finds its case), not by position: an image the datalist does
    not hold gets ``None`` (explained without a ratio). What ``explain.json`` uses, so ``--input_paths`` given on the
    command line never borrows another case's labels."""
    known = {Path(_first(item["image"])).resolve(): item.get("label") for item in datalist}
    return [known.get(Path(_first(path)).resolve()) for path in image_paths]


def _nanmean(values: list[float]) -> float:
    """Mean of the finite values (nan when none is: a case whose structure fills or misses the whole volume)."""
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """The few lines a command line prints after a run: mean inside/outside ratio per map and the index path."""
    lines = ["attention inside / outside the target structures (mean over cases):"]
    lines += [f"  {name:<16s} {ratio:.2f}" for name, ratio in summary["mean_inside_outside_ratio"].items()]
    lines.append(f"index: {summary['index']}")
    return lines


class AttentionExplainer:
    """Run a network over volumes and write prediction, attention NIfTI files, montages, the index with its viewer,
    and a summary.

    Args:
        network: a trained network with ``forward_with_attention`` (either medattn3d network).
        preprocessing: the inference preprocessing (``stage="infer"`` preset) the predictions are inverted through.
        inferer: a MONAI inferer (sliding window / slice inferer, possibly wrapped by ``PrecisionInferer``).
        output_dir: where everything is written.
        montage_map: which map the montage shows and the viewer shows first (default: the finest gate level /
            the last step's finest scale).
        label_preprocessing: the ``stage="val"`` preset, used to bring ground-truth labels into the same space.
        class_names: ``{"1": "liver", ...}`` (or a list) for the prediction's label tables and the viewer's legend
            (default: ``class_k``).
        viewer: write the interactive viewer (volumes as ``viewer/<case>.js`` plus the vendored NiiVue, ~2.3 MB).
        viewer_max_voxels: volumes larger than this are reduced by a whole factor per axis for the page only.
    """

    def __init__(
        self,
        network: nn.Module,
        preprocessing: Compose,
        inferer: Callable,
        output_dir: str | Path,
        montage_map: str | None = None,
        label_preprocessing: Compose | None = None,
        class_names: Mapping[Any, str] | Sequence[str] | None = None,
        viewer: bool = True,
        viewer_max_voxels: int = DEFAULT_MAX_VOXELS,
    ) -> None:
        self.network = network
        self.preprocessing = preprocessing
        self.inferer = inferer
        self.output_dir = Path(output_dir)
        self.predictor = AttentionPredictor(network)
        self.names = self.predictor.names
        if montage_map is not None and montage_map not in self.names:
            raise ValueError(f"montage_map {montage_map!r} is not one of this network's maps: {', '.join(self.names)}")
        self.montage_map = montage_map or default_map(self.names)
        self.label_preprocessing = label_preprocessing
        self.class_names = class_names
        self.num_classes = 0  # learnt from the first prediction: the viewer's legend names every class
        self.viewer = viewer
        self.viewer_max_voxels = viewer_max_voxels

    def _write_maps(self, data: dict[str, Any], name: str) -> list[Path]:
        """Invert every map through the preprocessing (linear interpolation, the prediction writer's inverse chain)
        and write it as float32 NIfTI in the input's geometry."""
        written = []
        for map_name in self.names:
            restored = restore_chain(self.preprocessing, pred_key=map_name, softmax=False)(
                {"image": data["image"], map_name: data[map_name]}
            )[map_name]
            volume = np.asarray(restored[0].clamp(0.0, 1.0), dtype=np.float32)
            target = self.output_dir / f"{name}_attention_{map_name}.nii.gz"
            image = nib.Nifti1Image(volume, np.asarray(restored.affine, dtype=np.float64))
            image.header.set_xyzt_units("mm")
            with atomic_path(target) as tmp:
                nib.save(image, tmp)
            written.append(target)
        return written

    def explain_case(
        self, image_path: str | Sequence[str], label_path: str | None = None, name: str | None = None
    ) -> dict[str, Any]:
        """Everything for one volume; returns its summary (name, files, attention ratios, viewer entry)."""
        self.network.eval()
        name = name or case_output_names([image_path])[Path(_first(image_path)).absolute()]
        data = self.preprocessing({"image": image_path})
        device = next(self.network.parameters()).device
        with torch.no_grad():
            outputs = self.inferer(data["image"][None].to(device), self.predictor)
        data["pred"] = outputs["pred"][0].cpu()
        for map_name in self.names:
            data[map_name] = outputs[map_name][0].float().cpu().clamp(0.0, 1.0)
        image = np.asarray(data["image"][0], dtype=np.float32)
        prediction = np.asarray(torch.argmax(data["pred"], dim=0)).astype(np.uint8)
        maps = {map_name: np.asarray(data[map_name][0]) for map_name in self.names}
        label = None
        if label_path is not None and self.label_preprocessing is not None:
            labelled = self.label_preprocessing({"image": image_path, "label": label_path})
            label = np.asarray(labelled["label"][0]).round().astype(np.uint8)
        structure = (label if label is not None else prediction) > 0
        ratios = {map_name: attention_ratio(maps[map_name], structure) for map_name in self.names}

        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.num_classes = max(self.num_classes, int(data["pred"].shape[0]))
        write_case(data["pred"], data, self.preprocessing, self.output_dir, name, self.class_names)
        self._write_maps(data, name)
        montage = write_montage(
            image,
            prediction,
            maps[self.montage_map],
            self.output_dir / f"{name}_montage.png",
            title=f"{name}: attention {self.montage_map}",
            label=label,
            spacing=[float(v) for v in data["image"].pixdim[:3]],
        )
        viewer_entry = None
        if self.viewer and image.ndim == 3:  # the viewer shows volumes; a 2D image keeps its montage and files
            layers = [Layer("scan", "scan", image), Layer("prediction", "labels", prediction)]
            layers += [Layer("truth", "labels", label)] if label is not None else []
            layers += [Layer(map_name, "attention", maps[map_name]) for map_name in self.names]
            affine = np.asarray(data["image"].affine, dtype=np.float64)
            viewer_entry = write_case_layers(self.output_dir, name, layers, affine, self.viewer_max_voxels)
        files = sorted(p.name for p in self.output_dir.glob(f"{name}_*.nii.gz"))
        return {
            "name": name,
            "montage": montage.name,
            "files": files,
            "ratios": ratios,
            "structure": "ground truth" if label is not None else "prediction",
            "viewer": viewer_entry,
        }

    def run(
        self, image_paths: Sequence[str | Sequence[str]], label_paths: Sequence[str | None] | None = None
    ) -> dict[str, Any]:
        """Explain every volume; write ``index.html`` and ``attention_summary.{csv,json}``; return the summary."""
        labels = list(label_paths) if label_paths else [None] * len(image_paths)
        if len(labels) != len(image_paths):
            raise ValueError(f"{len(image_paths)} image(s) but {len(labels)} label(s) to explain")
        names = case_output_names(image_paths)
        cases = [
            self.explain_case(p, lab, names[Path(_first(p)).absolute()])
            for p, lab in zip(image_paths, labels, strict=True)
        ]
        mean_ratios = {n: _nanmean([c["ratios"][n] for c in cases]) for n in self.names}
        viewer_cases = [c["viewer"] for c in cases if c["viewer"] is not None]
        if viewer_cases:
            copy_viewer_assets(self.output_dir)
        # the viewer's label layers hold class indices (BraTS' value 4 is class 3 there): named in class order
        legend = {str(k): v for k, v in enumerate(value_name_map(self.class_names, self.num_classes).values())}
        index = write_index(self.output_dir, cases, self.names, viewer_cases, self.montage_map, legend)
        table = io.StringIO()
        writer = csv.writer(table, lineterminator="\n")
        writer.writerow(["case", "structure", *self.names])
        for case in cases:
            writer.writerow([case["name"], case["structure"], *(f"{case['ratios'][n]:.4f}" for n in self.names)])
        writer.writerow(["mean", "", *(f"{mean_ratios[n]:.4f}" for n in self.names)])
        atomic_write_text(self.output_dir / "attention_summary.csv", table.getvalue())
        summary = {"cases": cases, "mean_inside_outside_ratio": mean_ratios, "index": str(index)}
        atomic_write_text(self.output_dir / "attention_summary.json", json.dumps(summary, indent=1) + "\n")
        return summary
