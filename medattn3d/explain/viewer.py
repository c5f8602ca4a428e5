"""Volumes for the in-page viewer (NiiVue): compact NIfTI layers embedded as base64 in one ``.js`` file per case.

Browsers refuse ``fetch()`` of local files from a ``file://`` page, but they do run ``<script src>`` files next to
it; so each case's layers (scan, prediction, truth, attention maps) are gzipped NIfTI bytes inside a small script
that hands them to the viewer, and the vendored viewer is copied next to the page: the folder opens from disk, with
no server and no network, and can be moved or zipped as a whole.

Layers are on the network's grid (after reorientation and resampling: the grid the maps were computed on), stored
as uint8 (the scan windowed to its 0.5-99.5 percentiles, maps as 0..1 in steps of 1/255 through the NIfTI scale
slope) and, when a volume has more than ``max_voxels`` voxels, reduced by a whole factor per axis: mean over each
block for the scan and maps, the highest label in each block for label maps (small structures stay visible).
"""

from __future__ import annotations

import base64
import gzip
import json
import math
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

from medattn3d.outputs.atomic import atomic_path, atomic_write_text

VIEWER_FOLDER = "viewer"
# What the page needs, copied from the package's static folder next to the written index.
STATIC_FILES = ("niivue.umd.js", "explain_viewer.js", "explain_viewer.css", "LICENSE-niivue.txt")
DEFAULT_MAX_VOXELS = 160**3


@dataclass(frozen=True)
class Layer:
    """One volume of the viewer: ``kind`` is ``"scan"``, ``"labels"`` or ``"attention"``."""

    name: str
    kind: str
    data: np.ndarray


def reduction_factor(shape: tuple[int, ...], max_voxels: int) -> int:
    """The smallest whole factor per axis that brings ``shape`` to at most ``max_voxels`` voxels (1: untouched)."""
    factor = 1
    while math.prod(math.ceil(s / factor) for s in shape) > max_voxels:
        factor += 1
    return factor


def reduce_volume(volume: np.ndarray, factor: int, labels: bool) -> np.ndarray:
    """Blocks of ``factor`` voxels per axis to one voxel: their mean, or their highest label for label maps."""
    if factor == 1:
        return volume
    tensor = torch.as_tensor(np.ascontiguousarray(volume))[None, None]
    pool = F.max_pool3d if labels else F.avg_pool3d
    reduced = pool(tensor if labels else tensor.float(), factor, stride=factor, ceil_mode=True)
    return reduced[0, 0].numpy().astype(volume.dtype if labels else np.float32)


def reduced_affine(affine: np.ndarray, factor: int) -> np.ndarray:
    """Affine of a volume reduced by ``factor`` per axis: voxels ``factor`` times larger, block centres kept."""
    scaled = np.array(affine, dtype=np.float64)
    scaled[:3, 3] = affine[:3, :3] @ np.full(3, (factor - 1) / 2.0) + affine[:3, 3]
    scaled[:3, :3] = affine[:3, :3] * factor
    return scaled


def _to_uint8(layer: Layer) -> tuple[np.ndarray, float]:
    """uint8 voxels and the NIfTI scale slope that maps them back to the layer's values."""
    if layer.kind == "labels":
        if layer.data.max(initial=0) > 255:
            raise ValueError(f"viewer layer {layer.name}: labels above 255 do not fit the viewer's uint8 layers")
        return layer.data.astype(np.uint8), 1.0
    if layer.kind == "attention":
        return np.round(np.clip(layer.data, 0.0, 1.0) * 255.0).astype(np.uint8), 1.0 / 255.0
    low, high = np.percentile(layer.data, (0.5, 99.5))
    scaled = (layer.data - low) / max(float(high - low), 1e-6)
    return np.round(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8), 1.0


def nifti_base64(data: np.ndarray, affine: np.ndarray, slope: float = 1.0) -> str:
    """A gzipped NIfTI-1 file of ``data`` as a base64 string (what ``NVImage.loadFromBase64`` reads)."""
    image = nib.Nifti1Image(data, affine)
    image.header.set_xyzt_units("mm")
    image.header.set_slope_inter(slope, 0.0)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    return base64.b64encode(gzip.compress(image.to_bytes(), compresslevel=6, mtime=0)).decode("ascii")


def write_case_layers(
    output_dir: Path, name: str, layers: list[Layer], affine: np.ndarray, max_voxels: int = DEFAULT_MAX_VOXELS
) -> dict:
    """Write ``viewer/<name>.js`` holding ``layers`` (3D arrays on one grid with ``affine``); return the entry the
    page lists for this case (script path, layer names, reduction factor)."""
    shape = layers[0].data.shape
    if any(layer.data.shape != shape for layer in layers) or len(shape) != 3:
        shapes = [layer.data.shape for layer in layers]
        raise ValueError(f"viewer layers of {name} must be 3D volumes of one shape, got {shapes}")
    factor = reduction_factor(shape, max_voxels)
    grid = reduced_affine(np.asarray(affine, dtype=np.float64), factor)
    encoded = []
    for layer in layers:
        reduced = reduce_volume(layer.data, factor, labels=layer.kind == "labels")
        data, slope = _to_uint8(Layer(layer.name, layer.kind, reduced))
        encoded.append({"name": layer.name, "kind": layer.kind, "base64": nifti_base64(data, grid, slope)})
    payload = {"name": name, "shape": list(shape), "factor": factor, "layers": encoded}
    script = f"medattn3dViewer.addCase({json.dumps(payload)});\n"
    path = output_dir / VIEWER_FOLDER / f"{name}.js"
    atomic_write_text(path, script)
    return {
        "name": name,
        "script": f"{VIEWER_FOLDER}/{path.name}",
        "layers": [layer.name for layer in layers],
        "factor": factor,
        "shape": list(shape),
    }


def copy_viewer_assets(output_dir: Path) -> list[Path]:
    """Copy the vendored viewer and its glue next to the page (``viewer/``), so the written folder is self-contained."""
    target = output_dir / VIEWER_FOLDER
    target.mkdir(parents=True, exist_ok=True)
    static = resources.files("medattn3d.explain") / "static"
    copied = []
    for file in STATIC_FILES:
        with resources.as_file(static / file) as source:
            if not source.is_file():
                raise FileNotFoundError(f"{source}: viewer asset missing from the medattn3d installation")
            destination = target / file
            with atomic_path(destination) as tmp:
                shutil.copyfile(source, tmp)
        copied.append(destination)
    return copied
