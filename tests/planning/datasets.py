"""Tiny MSD-layout datasets for planning tests: ``imagesTr/``, ``labelsTr/``, ``imagesTs/`` and a ``dataset.json``
written exactly as the Medical Segmentation Decathlon ships it (no ``validation`` list, ``test`` as plain paths,
``labels``/``modality`` keyed "0", "1", ...), unless said otherwise. Each writes in well under a second.

Stable names (end-to-end planning tests use them; add, do not rename):

- :func:`write_spleen_ct` -- 2 classes (background, spleen), CT as int16 HU, 6 training + 2 test cases with
  different shapes and spacings (median 0.8 x 0.8 x 2.5 mm) and stored orientations (RAS, LPS, and one stored
  with its axes permuted, "SAR"). Spleen voxels are drawn from N(110, 15) HU, other tissue ~ N(40, 20), fat -100,
  air -1000. Facts: :data:`SPLEEN_CASES`.
- :func:`write_brain_mri` -- BrainTumour-like: one 4D NIfTI per case with 4 channels on the last axis
  (FLAIR, T1w, t1gd, T2w), 4 classes (background, edema, non-enhancing tumour, enhancing tumour), zero outside a
  brain ellipsoid, 1 mm voxels, 5 training + 1 test. Facts: :data:`BRAIN_CASES`.
- :func:`write_abdomen_ct_14` -- 14 classes (BTCV's 13 organs + background), anisotropic: 0.7-0.9 mm in plane,
  4-6 mm slices (z spacings 5, 5, 4, 5, 5, 6), 6 training + 1 test. Facts: :data:`ABDOMEN_CASES`.
- :func:`write_prostate_two_files` -- 2 channels as one file per channel (``image`` is a list ``[T2, ADC]``),
  3 classes (background, PZ, TZ), in our manifest form *with* a ``validation`` list (4 training, 1 validation,
  1 test given as a list of files). Facts: :data:`PROSTATE_CASES`.
- :data:`DATASETS` maps the names ``"spleen_ct"``, ``"brain_mri"``, ``"abdomen_ct_14"``, ``"prostate_two_files"``
  to those writers.
- :func:`write_broken` ``(name, root) -> (dataset.json, message)`` writes dataset ``name`` with one planted problem
  and returns a fragment of the one problem line the dataset check must report: spleen_ct: a label value outside
  ``labels``; brain_mri: an image with 3 channels where ``modality`` names 4; abdomen_ct_14: a label whose affine
  differs from its image's; prostate_two_files: an ADC file whose shape differs from its T2.

Every writer takes ``(root, seed=0)``, returns the path of the datalist it wrote, and is deterministic. Cases facts
(``CaseSpec``: name, shape and spacing in RAS order, stored orientation) are what a fingerprint must find.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import nibabel as nib
import nibabel.orientations as nio
import numpy as np


class CaseSpec(NamedTuple):
    """One generated case: file stem, shape and spacing after reorientation to RAS, orientation as stored."""

    name: str
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    axcodes: str = "RAS"


SPLEEN_LABELS = {"0": "background", "1": "spleen"}
SPLEEN_CASES = [
    CaseSpec("spleen_2", (32, 32, 16), (0.8, 0.8, 2.5)),
    CaseSpec("spleen_3", (36, 32, 16), (0.7, 0.7, 2.5), "LPS"),
    CaseSpec("spleen_5", (32, 28, 20), (0.8, 0.8, 2.0)),
    CaseSpec("spleen_8", (34, 34, 16), (0.9, 0.9, 2.5), "SAR"),
    CaseSpec("spleen_9", (32, 32, 18), (0.75, 0.75, 3.0)),
    CaseSpec("spleen_10", (30, 32, 16), (0.8, 0.8, 2.5)),
]
SPLEEN_TEST = [CaseSpec("spleen_1", (32, 32, 16), (0.8, 0.8, 2.5)), CaseSpec("spleen_7", (30, 30, 16), (0.8, 0.8, 2.5))]
SPLEEN_HU = {"spleen": (110.0, 15.0), "tissue": (40.0, 20.0), "fat": -100.0, "air": -1000.0}

BRAIN_LABELS = {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"}
BRAIN_MODALITY = {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}
BRAIN_CASES = [
    CaseSpec("BRATS_001", (32, 32, 16), (1.0, 1.0, 1.0)),
    CaseSpec("BRATS_002", (30, 32, 16), (1.0, 1.0, 1.0)),
    CaseSpec("BRATS_003", (32, 30, 18), (1.0, 1.0, 1.0), "LPS"),
    CaseSpec("BRATS_004", (32, 32, 16), (1.0, 1.0, 1.0)),
    CaseSpec("BRATS_005", (28, 32, 16), (1.0, 1.0, 1.0)),
]
BRAIN_TEST = [CaseSpec("BRATS_485", (32, 32, 16), (1.0, 1.0, 1.0))]
# Per channel: (brain mean, brain std), and the offset each tumour class adds (edema, non-enhancing, enhancing).
BRAIN_INTENSITY = [((300.0, 40.0), (120, 60, 90)), ((500.0, 50.0), (-60, -90, -30)), ((600.0, 60.0), (20, -40, 400)),
                   ((800.0, 80.0), (300, 200, 150))]  # fmt: skip

ABDOMEN_LABELS = {
    "0": "background", "1": "spleen", "2": "right kidney", "3": "left kidney", "4": "gallbladder", "5": "esophagus",
    "6": "liver", "7": "stomach", "8": "aorta", "9": "inferior vena cava", "10": "portal vein and splenic vein",
    "11": "pancreas", "12": "right adrenal gland", "13": "left adrenal gland",
}  # fmt: skip
ABDOMEN_CASES = [
    CaseSpec("img0001", (32, 32, 12), (0.8, 0.8, 5.0)),
    CaseSpec("img0002", (34, 32, 12), (0.75, 0.75, 5.0)),
    CaseSpec("img0003", (32, 30, 14), (0.85, 0.85, 4.0), "LPS"),
    CaseSpec("img0004", (32, 32, 12), (0.8, 0.8, 5.0)),
    CaseSpec("img0005", (36, 34, 10), (0.7, 0.7, 5.0)),
    CaseSpec("img0006", (32, 32, 12), (0.9, 0.9, 6.0)),
]
ABDOMEN_TEST = [CaseSpec("img0061", (32, 32, 12), (0.8, 0.8, 5.0))]

PROSTATE_LABELS = {"0": "background", "1": "PZ", "2": "TZ"}
PROSTATE_MODALITY = {"0": "T2", "1": "ADC"}
PROSTATE_CASES = [
    CaseSpec("prostate_00", (32, 32, 16), (0.6, 0.6, 3.6)),
    CaseSpec("prostate_01", (32, 30, 16), (0.625, 0.625, 3.6)),
    CaseSpec("prostate_02", (30, 32, 18), (0.6, 0.6, 3.0)),
    CaseSpec("prostate_04", (32, 32, 16), (0.65, 0.65, 4.0), "LPS"),
]
PROSTATE_VALIDATION = [CaseSpec("prostate_06", (32, 32, 16), (0.6, 0.6, 3.6))]
PROSTATE_TEST = [CaseSpec("prostate_03", (32, 32, 16), (0.6, 0.6, 3.6))]


def stored(array_ras: np.ndarray, spacing: tuple[float, ...], axcodes: str) -> tuple[np.ndarray, np.ndarray]:
    """``array_ras`` (RAS axis order, extra axes after the first three kept) as stored with ``axcodes``, and the
    voxel-to-world affine that puts every voxel back where the RAS array had it (nibabel's orientation tools)."""
    ras_affine = np.diag([*spacing, 1.0])
    ras_affine[:3, 3] = [-10.0, 20.0, -30.0]
    transform = nio.ornt_transform(nio.axcodes2ornt("RAS"), nio.axcodes2ornt(tuple(axcodes)))
    data = nio.apply_orientation(array_ras, transform)
    affine = ras_affine @ nio.inv_ornt_aff(transform, array_ras.shape[:3])
    return np.ascontiguousarray(data), affine


def _save(array_ras: np.ndarray, spec: CaseSpec, path: Path) -> Path:
    data, affine = stored(array_ras, spec.spacing, spec.axcodes)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(data, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    nib.save(image, str(path))
    return path


def _ellipsoid(shape: tuple[int, ...], center: tuple[float, ...], radii: tuple[float, ...]) -> np.ndarray:
    grid = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, center, radii, strict=True)) <= 1.0


def _write_json(root: Path, manifest: dict) -> Path:
    path = root / "dataset.json"
    path.write_text(json.dumps(manifest, indent=4) + "\n")
    return path


def _msd_header(name: str, description: str, modality: dict, labels: dict, tensor_size: str) -> dict:
    return {
        "name": name,
        "description": description,
        "reference": "synthetic test data (medattn3d tests/planning/datasets.py)",
        "licence": "CC-BY-SA 4.0",
        "release": "1.0 04/05/2018",
        "tensorImageSize": tensor_size,
        "modality": modality,
        "labels": labels,
    }


def _msd_lists(training: list[CaseSpec], test: list[CaseSpec]) -> dict:
    return {
        "numTraining": len(training),
        "numTest": len(test),
        "training": [
            {"image": f"./imagesTr/{c.name}.nii.gz", "label": f"./labelsTr/{c.name}.nii.gz"} for c in training
        ],
        "test": [f"./imagesTs/{c.name}.nii.gz" for c in test],
    }


def spleen_case(spec: CaseSpec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A CT (int16 HU, RAS order) with a body, a fat rim and a spleen, and its label (uint8)."""
    shape = spec.shape
    center = tuple(s / 2 for s in shape)
    body = _ellipsoid(shape, center, (shape[0] * 0.48, shape[1] * 0.45, shape[2] * 4))
    inner = _ellipsoid(shape, center, (shape[0] * 0.42, shape[1] * 0.39, shape[2] * 4))
    spleen = _ellipsoid(shape, (shape[0] * 0.3, shape[1] * 0.55, shape[2] * 0.5), (5.0, 4.0, shape[2] * 0.3))
    image = np.full(shape, SPLEEN_HU["air"], np.float32)
    image[body] = SPLEEN_HU["fat"]
    image[inner] = rng.normal(*SPLEEN_HU["tissue"], size=int(inner.sum()))
    image[spleen] = rng.normal(*SPLEEN_HU["spleen"], size=int(spleen.sum()))
    return np.round(image).astype(np.int16), spleen.astype(np.uint8)


def write_spleen_ct(root: str | Path, seed: int = 0) -> Path:
    """The 2-class CT task (MSD Task09-like); see the module docstring."""
    root, rng = Path(root), np.random.default_rng(seed)
    for spec in SPLEEN_CASES:
        image, label = spleen_case(spec, rng)
        _save(image, spec, root / "imagesTr" / f"{spec.name}.nii.gz")
        _save(label, spec, root / "labelsTr" / f"{spec.name}.nii.gz")
    for spec in SPLEEN_TEST:
        _save(spleen_case(spec, rng)[0], spec, root / "imagesTs" / f"{spec.name}.nii.gz")
    header = _msd_header("Spleen", "Spleen Segmentation", {"0": "CT"}, SPLEEN_LABELS, "3D")
    return _write_json(root, {**header, **_msd_lists(SPLEEN_CASES, SPLEEN_TEST)})


def brain_case(spec: CaseSpec, rng: np.random.Generator, channels: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """A skull-stripped 4-channel MRI (float32, X, Y, Z, C) with nested tumour classes 1-3, and its label."""
    shape = spec.shape
    brain = _ellipsoid(shape, tuple(s / 2 for s in shape), tuple(s * 0.45 for s in shape))
    center = (shape[0] * 0.6, shape[1] * 0.45, shape[2] * 0.5)
    label = np.zeros(shape, np.uint8)
    label[_ellipsoid(shape, center, (7.0, 6.0, 5.0)) & brain] = 1
    label[_ellipsoid(shape, center, (4.5, 4.0, 3.5)) & brain] = 3
    label[_ellipsoid(shape, center, (2.5, 2.0, 2.0)) & brain] = 2
    image = np.zeros((*shape, channels), np.float32)
    for c, ((mean, std), offsets) in enumerate(BRAIN_INTENSITY[:channels]):
        values = rng.normal(mean, std, size=shape).astype(np.float32)
        for cls, offset in enumerate(offsets, start=1):
            values[label == cls] += offset
        image[..., c] = np.where(brain, np.maximum(values, 1.0), 0.0)
    return image, label


def write_brain_mri(root: str | Path, seed: int = 0) -> Path:
    """The 4-channel, 4-class MRI task with 4D NIfTI images (MSD Task01-like); see the module docstring."""
    root, rng = Path(root), np.random.default_rng(seed)
    for spec in BRAIN_CASES:
        image, label = brain_case(spec, rng)
        _save(image, spec, root / "imagesTr" / f"{spec.name}.nii.gz")
        _save(label, spec, root / "labelsTr" / f"{spec.name}.nii.gz")
    for spec in BRAIN_TEST:
        _save(brain_case(spec, rng)[0], spec, root / "imagesTs" / f"{spec.name}.nii.gz")
    header = _msd_header(
        "BRATS", "Gliomas segmentation tumour and oedema in on brain images", BRAIN_MODALITY, BRAIN_LABELS, "4D"
    )
    return _write_json(root, {**header, **_msd_lists(BRAIN_CASES, BRAIN_TEST)})


def abdomen_case(spec: CaseSpec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A CT (int16) with 13 box-shaped organs on a 4 x 4 in-plane grid, organ ``k`` at ~(20 + 8k) HU."""
    shape = spec.shape
    image = rng.normal(0.0, 15.0, size=shape).astype(np.float32) - 80.0
    label = np.zeros(shape, np.uint8)
    step_x, step_y = shape[0] // 4, shape[1] // 4
    for organ in range(1, 14):
        i, j = divmod(organ - 1, 4)
        box = (slice(i * step_x + 1, (i + 1) * step_x - 1), slice(j * step_y + 1, (j + 1) * step_y - 1),
               slice(2, shape[2] - 2))  # fmt: skip
        label[box] = organ
        image[box] = rng.normal(20.0 + 8.0 * organ, 10.0, size=label[box].shape)
    return np.round(image).astype(np.int16), label


def write_abdomen_ct_14(root: str | Path, seed: int = 0) -> Path:
    """The 14-class anisotropic CT task (BTCV-like, MSD layout); see the module docstring."""
    root, rng = Path(root), np.random.default_rng(seed)
    for spec in ABDOMEN_CASES:
        image, label = abdomen_case(spec, rng)
        _save(image, spec, root / "imagesTr" / f"{spec.name}.nii.gz")
        _save(label, spec, root / "labelsTr" / f"{spec.name}.nii.gz")
    for spec in ABDOMEN_TEST:
        _save(abdomen_case(spec, rng)[0], spec, root / "imagesTs" / f"{spec.name}.nii.gz")
    header = _msd_header("BTCV", "Multi-organ abdominal CT, 5 mm slices", {"0": "CT"}, ABDOMEN_LABELS, "3D")
    return _write_json(root, {**header, **_msd_lists(ABDOMEN_CASES, ABDOMEN_TEST)})


def prostate_case(spec: CaseSpec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """T2 and ADC volumes (float32) on one grid, and a label with the peripheral (1) and transition (2) zones."""
    shape = spec.shape
    center = (shape[0] / 2, shape[1] / 2, shape[2] / 2)
    gland = _ellipsoid(shape, center, (8.0, 7.0, shape[2] * 0.35))
    transition = _ellipsoid(shape, center, (5.0, 4.5, shape[2] * 0.3))
    label = np.zeros(shape, np.uint8)
    label[gland] = 1
    label[transition] = 2
    t2 = rng.normal(400.0, 40.0, size=shape).astype(np.float32)
    t2[label == 1] += 250.0
    t2[label == 2] += 80.0
    adc = rng.normal(1800.0, 150.0, size=shape).astype(np.float32)
    adc[label == 1] -= 500.0
    adc[label == 2] -= 800.0
    return np.maximum(t2, 0.0), np.maximum(adc, 0.0), label


def _channel_files(folder: str, name: str) -> list[str]:
    return [f"{folder}/{name}_0000.nii.gz", f"{folder}/{name}_0001.nii.gz"]


def write_prostate_two_files(root: str | Path, seed: int = 0) -> Path:
    """The 2-channel task with one file per channel and a ``validation`` list; see the module docstring."""
    root, rng = Path(root), np.random.default_rng(seed)
    for folder, specs in (("imagesTr", PROSTATE_CASES + PROSTATE_VALIDATION), ("imagesTs", PROSTATE_TEST)):
        for spec in specs:
            t2, adc, label = prostate_case(spec, rng)
            t2_file, adc_file = _channel_files(folder, spec.name)
            _save(t2, spec, root / t2_file)
            _save(adc, spec, root / adc_file)
            if folder == "imagesTr":
                _save(label, spec, root / "labelsTr" / f"{spec.name}.nii.gz")
    header = _msd_header("Prostate", "Prostate transitional and peripheral zones", PROSTATE_MODALITY,
                         PROSTATE_LABELS, "4D")  # fmt: skip

    def entries(specs: list[CaseSpec]) -> list[dict]:
        return [{"image": _channel_files("imagesTr", c.name), "label": f"labelsTr/{c.name}.nii.gz"} for c in specs]

    manifest = {
        **header,
        "numTraining": len(PROSTATE_CASES),
        "numValidation": len(PROSTATE_VALIDATION),
        "numTest": len(PROSTATE_TEST),
        "training": entries(PROSTATE_CASES),
        "validation": entries(PROSTATE_VALIDATION),
        "test": [_channel_files("imagesTs", c.name) for c in PROSTATE_TEST],
    }
    return _write_json(root, manifest)


DATASETS: dict[str, Callable[..., Path]] = {
    "spleen_ct": write_spleen_ct,
    "brain_mri": write_brain_mri,
    "abdomen_ct_14": write_abdomen_ct_14,
    "prostate_two_files": write_prostate_two_files,
}


def write_broken(name: str, root: str | Path, seed: int = 0) -> tuple[Path, str]:
    """Dataset ``name`` with one planted problem; returns the datalist and a fragment of the expected problem line."""
    root = Path(root)
    path = DATASETS[name](root, seed)
    rng = np.random.default_rng(seed + 1)
    if name == "spleen_ct":
        spec = SPLEEN_CASES[1]
        image, label = spleen_case(spec, rng)
        label[label == 1] = 2
        _save(label, spec, root / "labelsTr" / f"{spec.name}.nii.gz")
        return path, f"{spec.name}.nii.gz: label values [2] lie outside the 2 classes"
    if name == "brain_mri":
        spec = BRAIN_CASES[2]
        image, _ = brain_case(spec, rng, channels=3)
        _save(image, spec, root / "imagesTr" / f"{spec.name}.nii.gz")
        return path, f"{spec.name}.nii.gz: is 4D (shape (32, 30, 18, 3)) where a 3D volume with 4 channel(s)"
    if name == "abdomen_ct_14":
        spec = ABDOMEN_CASES[3]
        _, label = abdomen_case(spec, rng)
        moved = spec._replace(spacing=(spec.spacing[0], spec.spacing[1], spec.spacing[2] + 1.0))
        _save(label, moved, root / "labelsTr" / f"{spec.name}.nii.gz")
        return path, f"{spec.name}.nii.gz: label affine differs from its image's"
    if name == "prostate_two_files":
        spec = PROSTATE_CASES[1]
        smaller = spec._replace(shape=(spec.shape[0], spec.shape[1], spec.shape[2] - 2))
        _, adc, _ = prostate_case(smaller, rng)
        _save(adc, smaller, root / _channel_files("imagesTr", spec.name)[1])
        return (
            path,
            f"{spec.name}_0001.nii.gz: channel shape (32, 30, 14) differs from the first channel's (32, 30, 16)",
        )
    raise KeyError(f"unknown dataset {name!r}; one of {sorted(DATASETS)}")
