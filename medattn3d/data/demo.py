"""Embedded demo dataset: deterministic synthetic abdominal CT with liver, spleen, kidney, pancreas and liver-lesion
labels.

Each case is a body cross-section (air outside, a fat layer, a muscle wall, soft-tissue interior) with a spine, an
aorta and a stomach as unlabelled distractors, and three large labelled organs whose position, size, orientation,
outline and texture vary randomly. Two small, variable targets make it a task where attention can matter (Oktay et
al. 2018 motivate attention gates with the pancreas): a pancreas (a thin, curved, lobulated tube from a thicker head
by the liver to a tail at the spleen, in a rim of fat, with the splenic vein along its back; about 0.2-0.4 % of the
voxels) and 1-3 hypodense liver lesions per case (20-40 HU darker than the liver, a few to a few hundred voxels).
Intensities overlap on purpose (liver ~60 HU, spleen ~50 HU, pancreas ~45 HU, muscle ~50 HU, soft tissue 15-45 HU,
lesions 20-45 HU; kidneys ~150 HU with a darker core, aorta ~170 HU, contrast-filled bowel loops 120-170 HU), so a
threshold cannot segment them: shape and position must be learnt. The image is blurred (partial volume) and noisy,
on an anisotropic grid (2.5 x 2.5 x 4 mm by default).
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

LABELS = {"0": "background", "1": "liver", "2": "spleen", "3": "kidney", "4": "pancreas", "5": "liver lesion"}
LIVER, PANCREAS, LESION = 1, 4, 5
# Part of the cached folder's settings: bump it whenever synthesize_case changes, so old demo data is rewritten.
GENERATOR_VERSION = 2


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
    return _upsample(rng.standard_normal(coarse), shape)


def _upsample(noise: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Trilinear upsampling of a coarse noise array to ``shape`` (a smooth random field)."""
    coarse = torch.from_numpy(noise.astype(np.float32))[None, None]
    return F.interpolate(coarse, size=shape, mode="trilinear", align_corners=True)[0, 0].numpy()


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


def _box_around(axes_mm: list[np.ndarray], points: np.ndarray, margin: float) -> tuple[slice, ...]:
    """Index box of the grid (``axes_mm``: voxel centres in mm per axis) holding ``points`` (K x 3, mm) +- margin."""
    return tuple(
        slice(int(np.searchsorted(a, lo)), int(np.searchsorted(a, hi, side="right")))
        for a, lo, hi in zip(axes_mm, points.min(0) - margin, points.max(0) + margin, strict=True)
    )


def _nearest_point(
    axes_mm: list[np.ndarray], box: tuple[slice, ...], points: np.ndarray, stretch: tuple[float, ...] = (1, 1, 1)
) -> tuple[np.ndarray, np.ndarray]:
    """For every voxel of ``box``: the distance (mm, each axis divided by ``stretch``: an elliptic cross-section) to
    the nearest of ``points`` (K x 3, mm) and its index."""
    scale = 1.0 / np.asarray(stretch, dtype=np.float32)
    grid = np.stack(np.meshgrid(*(a[b] for a, b in zip(axes_mm, box, strict=True)), indexing="ij"), axis=-1)
    shape = grid.shape[:3]
    grid = torch.from_numpy(grid.reshape(-1, 3).astype(np.float32) * scale)
    distance = torch.cdist(
        grid, torch.from_numpy(points.astype(np.float32) * scale), compute_mode="use_mm_for_euclid_dist"
    )
    nearest, index = distance.min(dim=1)
    return nearest.reshape(shape).numpy(), index.reshape(shape).numpy()


def _paint_pancreas(
    rng: np.random.Generator,
    axes_mm: list[np.ndarray],
    image: np.ndarray,
    label: np.ndarray,
    interior: np.ndarray,
    body_b: float,
) -> None:
    """Paint a pancreas in place: a curved band from the head (patient's right, by the liver) to the tail (left, at
    the spleen) arching in front of the aorta; half-thickness tapering from 9-12 to 5-7 mm (1.6 times that in
    height) with a lobulated outline; 40-50 HU in a rim of fat (0-9 mm thick, 3-5 mm on average); the splenic vein
    (contrast, unlabelled) along the back of its body and tail."""
    aorta_front = -body_b + 92.0  # the aorta's centre is 80 mm in front of the body's back, radius 12 mm
    head = np.array([rng.uniform(12, 28), aorta_front + rng.uniform(10, 20), rng.uniform(-15, 0)])
    tail = np.array([rng.uniform(-75, -55), aorta_front + rng.uniform(-5, 8), rng.uniform(5, 25)])
    t = np.linspace(0.0, 1.0, 64)[:, None]
    bulge = np.array([0.0, rng.uniform(5, 22), rng.uniform(-8, 8)])
    wiggle = np.array([0.0, rng.uniform(-4, 4), rng.uniform(-4, 4)])
    centreline = head + t * (tail - head) + np.sin(np.pi * t) * bulge + np.sin(2 * np.pi * t) * wiggle
    head_radius, tail_radius = rng.uniform(9, 12), rng.uniform(5, 7)
    radii = head_radius + (tail_radius - head_radius) * t[:, 0] ** 0.6
    vein_line = centreline - np.array([0.0, 1.0, 0.0]) * (radii[:, None] + 2.0)  # posterior, just outside the gland
    box = _box_around(axes_mm, np.concatenate([centreline, vein_line]), margin=1.6 * head_radius + 6.0)
    fat_rim = rng.uniform(3.0, 5.0)
    lobules = rng.standard_normal((6, 4, 4))  # drawn even when the box is empty, so later draws do not shift
    rim_field = rng.standard_normal((5, 4, 4))
    texture = rng.standard_normal((8, 6, 6))
    fat_hu, gland_hu = rng.uniform(-100.0, -80.0), rng.uniform(40.0, 50.0)
    size = tuple(b.stop - b.start for b in box)
    if min(size) < 2:
        return  # the pancreas lies outside a small field of view
    distance, index = _nearest_point(axes_mm, box, centreline, stretch=(1.0, 1.0, 1.6))
    vein_distance, vein_index = _nearest_point(axes_mm, box, vein_line)
    outline = radii[index] * (1.0 + 0.18 * _upsample(lobules, size))
    inside = interior[box]
    gland = (distance < outline) & inside
    vein = (vein_distance < 3.5) & (vein_index > 16) & inside & ~gland
    rim = fat_rim * np.clip(1.0 + 0.8 * _upsample(rim_field, size), 0.0, None)  # thin or absent in places
    fat = ((distance < outline + rim) | (vein_distance < 5.5)) & inside & ~gland & ~vein
    region_image, region_label = image[box], label[box]  # views: painting them paints the case
    region_image[fat] = fat_hu
    region_label[fat] = 0
    region_image[vein] = 160.0
    region_image[gland] = gland_hu + 10.0 * _upsample(texture, size)[gland]
    region_label[gland] = PANCREAS


def _paint_lesions(
    rng: np.random.Generator,
    grid: tuple[np.ndarray, ...],
    spacing: tuple[float, ...],
    image: np.ndarray,
    label: np.ndarray,
) -> None:
    """Paint 1-3 hypodense liver lesions in place: irregular ellipsoids of 4-12 mm radius (ten to a few hundred
    voxels), 20-40 HU darker than the liver around them (its texture kept), clipped to the liver."""
    count = int(rng.integers(1, 4))
    liver = np.flatnonzero(label == LIVER)
    half = [int(np.ceil(12.0 * 1.25 * 1.1 / s)) + 1 for s in spacing]  # the largest lesion's half-extent in voxels
    for _ in range(count):
        pick, semi = rng.random(), np.exp(rng.uniform(np.log(4.0), np.log(12.0))) * rng.uniform(0.8, 1.25, 3)
        threshold, darker = rng.uniform(0.9, 1.1), rng.uniform(20.0, 40.0)
        if liver.size == 0:
            continue
        at = np.unravel_index(liver[int(pick * liver.size)], label.shape)
        box = tuple(slice(max(int(i) - h, 0), int(i) + h + 1) for i, h in zip(at, half, strict=True))
        radius = sum(((g[box] - g[at]) / r) ** 2 for g, r in zip(grid, semi, strict=True))
        lesion = (radius < threshold) & (label[box] == LIVER)
        image[box][lesion] -= darker
        label[box][lesion] = LESION


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
    _paint_pancreas(rng, axes_mm, image, label, interior, body_b)
    _paint_lesions(rng, (x, y, z), spacing, image, label)

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
    settings = {
        "num_train": num_train,
        "num_val": num_val,
        "num_test": num_test,
        "shape": list(shape),
        "seed": seed,
        "version": GENERATOR_VERSION,
    }
    if manifest_path.is_file():
        existing = json.loads(manifest_path.read_text(encoding="utf-8"))
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
        "description": "Synthetic abdominal CT (liver, spleen, kidneys, pancreas, liver lesions): medattn3d.data.demo",
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
    """Make sure ``datalist`` exists: the demo folder's manifest is (re)generated when missing or written by an older
    generator (a settings check, no image read, when current); another missing manifest is an error naming it.
    Returns the manifest path. Bundles call this in ``initialize``."""
    datalist = Path(datalist)
    demo = default_demo_dir().resolve()
    in_demo = Path(dataset_dir).resolve() == demo
    if in_demo and datalist.resolve() == demo / "dataset.json":
        return generate_demo_dataset(dataset_dir)
    if datalist.is_file():
        return datalist
    if in_demo:
        return generate_demo_dataset(dataset_dir)
    raise InputError(datalist, "manifest not found (give --datalist, or leave --dataset_dir at the demo default)")


def _atomic_save(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """Save a NIfTI under a temporary name, then rename it into place."""
    from medattn3d.outputs.atomic import atomic_path

    with atomic_path(path) as tmp:
        nib.save(nib.Nifti1Image(array, affine), str(tmp))
