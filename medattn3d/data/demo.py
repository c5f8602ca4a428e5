"""Embedded demo dataset: deterministic synthetic abdominal CT with liver, spleen and kidney labels.

Each case is a body cross-section (air outside, a fat layer, a muscle wall, soft-tissue interior) with a spine, an
aorta and a stomach as unlabelled distractors, and three labelled organs whose position, size, orientation, outline
and texture vary randomly. Intensities overlap on purpose (liver ~60 HU, spleen ~50 HU, muscle ~50 HU; kidneys
~150 HU with a darker core, aorta ~170 HU, contrast-filled bowel loops 120-170 HU), so a threshold cannot segment
them: shape and position must be learnt. The image is blurred
(partial volume) and noisy, on an anisotropic grid (2.5 x 2.5 x 4 mm by default).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

from medattn3d.errors import InputError

LABELS = {"0": "background", "1": "liver", "2": "spleen", "3": "kidney"}


@dataclass(frozen=True)
class Organ:
    """An organ as a deformed ellipsoid: centre and semi-axes in mm (x right, y anterior, z superior), HU, label."""

    centre: tuple[float, float, float]
    axes: tuple[float, float, float]
    hu: float
    label: int


ORGANS = (  # painted in this order; later organs overwrite earlier ones where they touch
    Organ((60.0, 5.0, 35.0), (65.0, 55.0, 50.0), 60.0, 1),  # liver, patient's right
    Organ((-70.0, -15.0, 45.0), (30.0, 38.0, 42.0), 50.0, 2),  # spleen, left
    Organ((50.0, -45.0, -25.0), (24.0, 26.0, 42.0), 150.0, 3),  # right kidney
    Organ((-50.0, -45.0, -15.0), (24.0, 26.0, 42.0), 150.0, 3),  # left kidney
)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], coarse: tuple[int, ...]) -> np.ndarray:
    """Random field in [-1, 1]-ish, smooth on the scale of ``shape / coarse`` (trilinear upsampling of noise)."""
    noise = torch.from_numpy(rng.standard_normal(coarse).astype(np.float32))[None, None]
    return F.interpolate(noise, size=shape, mode="trilinear", align_corners=True)[0, 0].numpy()


def _blur(volume: np.ndarray, sigma_voxels: float) -> np.ndarray:
    """Separable Gaussian blur (partial-volume effect)."""
    radius = max(int(3 * sigma_voxels), 1)
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / sigma_voxels) ** 2)
    kernel /= kernel.sum()
    out = torch.from_numpy(volume.astype(np.float32))[None, None]
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = -1
        pad = [0, 0] * 3
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius
        out = F.conv3d(F.pad(out, pad, mode="replicate"), kernel.view(shape))
    return out[0, 0].numpy()


def synthesize_case(
    seed: int, shape: tuple[int, int, int] = (96, 96, 48), spacing: tuple[float, float, float] = (2.5, 2.5, 4.0)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One case: ``(image in HU float32, label uint8, affine)``; the same ``seed`` gives the same arrays."""
    rng = np.random.default_rng(seed)
    axes_mm = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing, strict=True)]
    x, y, z = np.meshgrid(*axes_mm, indexing="ij")
    image = np.full(shape, -1000.0, dtype=np.float32)
    label = np.zeros(shape, dtype=np.uint8)

    body_a, body_b = 150 * rng.uniform(0.9, 1.05), 110 * rng.uniform(0.9, 1.05)
    ellipse = (x / body_a) ** 2 + (y / body_b) ** 2
    image[ellipse < 1.0] = -100.0  # subcutaneous fat
    image[ellipse < (1 - 15 / body_b) ** 2] = 50.0  # muscle wall
    interior = ellipse < (1 - 25 / body_b) ** 2
    image[interior] = 30.0 + 15.0 * _smooth_field(rng, shape, (12, 12, 6))[interior]

    spine = (x / 18) ** 2 + ((y + body_b - 40) / 18) ** 2 < 1
    image[spine] = 450.0
    aorta = ((x + 10 + rng.uniform(-5, 5)) / 12) ** 2 + ((y + body_b - 80) / 12) ** 2 < 1
    image[aorta] = 170.0
    stomach_c = np.array([-40.0, 40.0, 40.0]) + rng.uniform(-10, 10, 3)
    stomach = (((x - stomach_c[0]) / 38) ** 2 + ((y - stomach_c[1]) / 28) ** 2 + ((z - stomach_c[2]) / 35) ** 2) < 1
    image[stomach] = 15.0
    image[stomach & (y > stomach_c[1] + 14)] = -600.0  # gas cap
    for _ in range(8):  # contrast-filled bowel loops: kidney-like HU, unlabelled
        c = rng.uniform([-90, -20, -90], [90, 70, 10])
        r = rng.uniform(10, 22, 3)
        loop = (((x - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((z - c[2]) / r[2]) ** 2) < 1
        image[loop & interior] = rng.uniform(120.0, 170.0)

    for organ in ORGANS:
        centre = np.array(organ.centre) + rng.uniform(-10, 10, 3)
        semi = np.array(organ.axes) * rng.uniform(0.8, 1.2, 3)
        angle = rng.uniform(-0.3, 0.3)
        c, s = np.cos(angle), np.sin(angle)
        dx, dy, dz = x - centre[0], y - centre[1], z - centre[2]
        u, v = c * dx + s * dy, -s * dx + c * dy
        radius = (u / semi[0]) ** 2 + (v / semi[1]) ** 2 + (dz / semi[2]) ** 2
        outline = 1.0 + 0.25 * _smooth_field(rng, shape, (5, 5, 4))
        inside = (radius < outline**2) & interior
        texture = 8.0 * _smooth_field(rng, shape, (24, 24, 12))
        image[inside] = organ.hu + rng.uniform(-8, 8) + texture[inside]
        if organ.label == 3:  # renal medulla and sinus: darker core
            image[inside & (radius < 0.35 * outline**2)] = 70.0
        label[inside] = organ.label

    image = _blur(image, 0.8) + rng.normal(0.0, 12.0, shape).astype(np.float32)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [-(n - 1) / 2 * s for n, s in zip(shape, spacing, strict=True)]
    return image.astype(np.float32), label, affine


def generate_demo_dataset(
    root: str | Path,
    num_train: int = 16,
    num_val: int = 4,
    num_test: int = 2,
    shape: tuple[int, int, int] = (96, 96, 48),
    seed: int = 0,
) -> Path:
    """Write ``imagesTr/``, ``labelsTr/``, ``imagesTs/`` and a Decathlon-style ``dataset.json`` under ``root``.

    Returns the manifest path. Files are written to a temporary name and renamed, so an interrupted run leaves
    no partial NIfTI; an existing complete dataset with the same settings is reused.
    """
    root = Path(root)
    manifest_path = root / "dataset.json"
    settings = {"num_train": num_train, "num_val": num_val, "num_test": num_test, "shape": list(shape), "seed": seed}
    if manifest_path.is_file():
        existing = json.loads(manifest_path.read_text())
        if existing.get("generator_settings") == settings:
            return manifest_path
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    records = []
    for index in range(num_train + num_val + num_test):
        image, label, affine = synthesize_case(seed * 100_003 + index, shape)
        name = f"case_{index:03d}.nii.gz"
        labelled = index < num_train + num_val
        _atomic_save(image, affine, root / ("imagesTr" if labelled else "imagesTs") / name)
        if labelled:
            _atomic_save(label, affine, root / "labelsTr" / name)
            records.append({"image": f"imagesTr/{name}", "label": f"labelsTr/{name}"})
        else:
            records.append({"image": f"imagesTs/{name}"})
    manifest = {
        "name": "medattn3d-demo-abdomen",
        "description": "Synthetic abdominal CT (liver, spleen, kidneys) generated by medattn3d.data.demo",
        "reference": "medattn3d",
        "licence": "CC0-1.0",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": LABELS,
        "numTraining": num_train,
        "numTest": num_test,
        "training": records[:num_train],
        "validation": records[num_train : num_train + num_val],
        "test": [r["image"] for r in records[num_train + num_val :]],
        "generator_settings": settings,
    }
    from medattn3d.outputs.atomic import atomic_write_text  # lazy: outputs imports data modules

    atomic_write_text(manifest_path, json.dumps(manifest, indent=2))
    return manifest_path


def default_demo_dir() -> Path:
    """Where the bundles put the demo dataset: ``$MEDATTN3D_DEMO_DIR`` or ``~/.cache/medattn3d/demo_abdomen``."""
    return Path(os.environ.get("MEDATTN3D_DEMO_DIR", Path.home() / ".cache" / "medattn3d" / "demo_abdomen"))


def prepare_dataset(dataset_dir: str | Path, datalist: str | Path) -> Path:
    """Make sure ``datalist`` exists: generate the demo dataset when it is missing and ``dataset_dir`` is the demo
    folder; otherwise say which manifest is missing. Returns the manifest path. Bundles call this in ``initialize``."""
    datalist = Path(datalist)
    if datalist.is_file():
        return datalist
    if Path(dataset_dir).resolve() == default_demo_dir().resolve():
        return generate_demo_dataset(dataset_dir)
    raise InputError(datalist, "manifest not found (give --datalist, or leave --dataset_dir at the demo default)")


def _atomic_save(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """Save a NIfTI under a temporary name, then rename it into place."""
    from medattn3d.outputs.atomic import atomic_path

    with atomic_path(path) as tmp:
        nib.save(nib.Nifti1Image(array, affine), str(tmp))
