"""The embedded demo dataset: deterministic, Decathlon-shaped, not solvable by thresholding, with small variable
targets (a pancreas and liver lesions) of the intended size."""

import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from medattn3d.data.check import check_manifest
from medattn3d.data.demo import GENERATOR_VERSION, LABELS, generate_demo_dataset, synthesize_case
from medattn3d.data.manifest import load_datalist

LIVER, SPLEEN, KIDNEY, PANCREAS, LESION = 1, 2, 3, 4, 5


@pytest.fixture(scope="module")
def cases() -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Four full-size cases (the demo's grid), shared by the tests below."""
    return [synthesize_case(seed) for seed in (0, 7, 16, 19)]


def _dilate(mask: np.ndarray, voxels: int) -> np.ndarray:
    """Binary dilation by a cube of side ``2 * voxels + 1`` (max pooling)."""
    tensor = torch.from_numpy(mask.astype(np.float32))[None, None]
    return F.max_pool3d(tensor, 2 * voxels + 1, stride=1, padding=voxels)[0, 0].numpy() > 0


def _components(mask: np.ndarray) -> list[int]:
    """Sizes of the 26-connected components of ``mask`` (SimpleITK's labelling)."""
    labelled = sitk.GetArrayFromImage(sitk.ConnectedComponent(sitk.GetImageFromArray(mask.astype(np.uint8)), True))
    return np.bincount(labelled.ravel())[1:].tolist()


def test_same_seed_same_case_other_seed_other_case():
    a_image, a_label, a_affine = synthesize_case(3, shape=(48, 48, 24))
    b_image, b_label, b_affine = synthesize_case(3, shape=(48, 48, 24))
    _, c_label, _ = synthesize_case(4, shape=(48, 48, 24))
    assert np.array_equal(a_image, b_image) and np.array_equal(a_label, b_label) and np.array_equal(a_affine, b_affine)
    assert not np.array_equal(a_label, c_label)


def test_every_class_present_with_plausible_intensities(cases):
    image, label, affine = cases[0]
    assert image.dtype == np.float32 and label.dtype == np.uint8
    assert set(np.unique(label)) == {int(k) for k in LABELS}
    assert np.allclose(np.diag(affine)[:3], [2.5, 2.5, 4.0])  # anisotropic
    for k, expected in ((LIVER, 60), (SPLEEN, 50), (KIDNEY, 135)):
        assert abs(float(np.median(image[label == k])) - expected) < 25
    assert float(image.min()) < -900  # air around the body


def test_class_fractions_in_the_intended_range(cases):
    """Large organs take percents of the volume, the pancreas a few tenths of a percent, lesions less."""
    for _, label, _ in cases:
        fraction = np.bincount(label.ravel(), minlength=len(LABELS)) / label.size
        assert 0.02 < fraction[LIVER] < 0.12 and 0.004 < fraction[SPLEEN] < 0.05 and 0.004 < fraction[KIDNEY] < 0.05
        assert 0.0015 < fraction[PANCREAS] < 0.006
        assert 5e-5 < fraction[LESION] < 0.003


def test_pancreas_is_thin_curved_in_fat_and_varies_between_cases(cases):
    masks = []
    for image, label, _ in cases:
        pancreas = label == PANCREAS
        assert len(_components(pancreas)) == 1
        core = pancreas & ~_dilate(~pancreas, 1)  # away from partial-volume blur
        assert 35 < float(np.median(image[core])) < 55
        ring = _dilate(pancreas, 2) & ~pancreas
        assert np.mean(image[ring] < -40) > 0.2  # largely wrapped in fat
        xs = np.flatnonzero(pancreas.any(axis=(1, 2)))
        assert (xs[-1] - xs[0]) * 2.5 > 80  # long (mm) ...
        assert pancreas.sum() * 2.5 * 2.5 * 4.0 / ((xs[-1] - xs[0]) * 2.5) < 600  # ... and thin: < 6 cm^2 section
        x_mm = xs * 2.5
        y_mm = np.array([np.argwhere(pancreas[x])[:, 0].mean() for x in xs]) * 2.5  # its midline, front to back
        assert np.abs(y_mm - np.polyval(np.polyfit(x_mm, y_mm, 1), x_mm)).max() > 5  # curved: > 5 mm off a line
        masks.append(pancreas)
    for i in range(len(masks)):
        for j in range(i + 1, len(masks)):
            overlap = 2 * np.sum(masks[i] & masks[j]) / (masks[i].sum() + masks[j].sum())
            assert overlap < 0.8, f"cases {i} and {j} have nearly the same pancreas (Dice {overlap:.2f})"


def test_lesions_are_few_small_hypodense_and_inside_the_liver(cases):
    for image, label, _ in cases:
        lesions = label == LESION
        sizes = _components(lesions)
        assert 1 <= len(sizes) <= 3 and all(3 <= n <= 600 for n in sizes)
        liver_or_lesion = _dilate((label == LIVER) | lesions, 1)
        assert liver_or_lesion[lesions].all()
        around = _dilate(lesions, 3) & (label == LIVER)
        contrast = float(np.median(image[around]) - np.median(image[lesions]))
        assert 8 < contrast < 45, f"lesions {contrast:.0f} HU darker than the liver around them"


@pytest.mark.parametrize("index", [0, 1])
def test_no_intensity_window_segments_a_class(cases, index):
    """The best [low, high) HU window per class stays far from a learnt segmentation (10-HU steps, from
    histograms: a window's voxel counts are differences of cumulative counts)."""
    image, label, _ = cases[index]
    edges = np.arange(-60, 330, 10)
    total = np.concatenate([[0], np.cumsum(np.histogram(image, edges)[0])])
    for k in range(1, len(LABELS)):
        organ = label == k
        inside = np.concatenate([[0], np.cumsum(np.histogram(image[organ], edges)[0])])
        low, high = np.triu_indices(len(edges), k=1)
        dice = 2 * (inside[high] - inside[low]) / (total[high] - total[low] + organ.sum())
        assert dice.max() < 0.7, f"{LABELS[str(k)]}: a threshold window reaches Dice {dice.max():.2f}"


def test_generated_tree_is_a_valid_manifest_and_is_reused(tmp_path):
    manifest = generate_demo_dataset(tmp_path, num_train=2, num_val=1, num_test=1, shape=(32, 32, 16))
    data = json.loads(manifest.read_text(encoding="utf-8"))
    assert data["labels"] == LABELS and data["modality"] == {"0": "CT"}
    assert len(data["training"]) == 2 and len(data["validation"]) == 1 and len(data["test"]) == 1
    assert check_manifest(manifest) == []
    first = load_datalist(manifest, "training")[0]
    assert nib.load(first["image"]).shape == (32, 32, 16)
    stamp = manifest.stat().st_mtime_ns
    generate_demo_dataset(tmp_path, num_train=2, num_val=1, num_test=1, shape=(32, 32, 16))
    assert manifest.stat().st_mtime_ns == stamp  # same settings: nothing rewritten
    assert not list(tmp_path.rglob("*.tmp*"))


def test_a_folder_from_an_older_generator_is_rewritten(tmp_path):
    manifest = generate_demo_dataset(tmp_path, num_train=1, num_val=1, num_test=0, shape=(32, 32, 16))
    data = json.loads(manifest.read_text(encoding="utf-8"))
    del data["generator_settings"]["version"]  # as the first generator (liver, spleen, kidney) wrote it
    data["labels"] = {"0": "background", "1": "liver", "2": "spleen", "3": "kidney"}
    manifest.write_text(json.dumps(data))
    generate_demo_dataset(tmp_path, num_train=1, num_val=1, num_test=0, shape=(32, 32, 16))
    data = json.loads(manifest.read_text(encoding="utf-8"))
    assert data["labels"] == LABELS and data["generator_settings"]["version"] == GENERATOR_VERSION


def test_bundles_get_the_current_demo_data_and_other_missing_manifests_are_errors(tmp_path, monkeypatch):
    from functools import partial

    from medattn3d.data import demo
    from medattn3d.errors import InputError

    small = partial(demo.generate_demo_dataset, num_train=1, num_val=1, num_test=0, shape=(32, 32, 16))
    monkeypatch.setattr(demo, "generate_demo_dataset", small)
    monkeypatch.setenv("MEDATTN3D_DEMO_DIR", str(tmp_path / "demo"))
    manifest = small(tmp_path / "demo")
    data = json.loads(manifest.read_text(encoding="utf-8"))
    del data["generator_settings"]["version"]  # a cached folder from the first generator
    manifest.write_text(json.dumps(data))
    assert demo.prepare_dataset(tmp_path / "demo", manifest) == manifest
    assert json.loads(manifest.read_text(encoding="utf-8"))["generator_settings"]["version"] == GENERATOR_VERSION
    with pytest.raises(InputError, match="manifest not found"):
        demo.prepare_dataset(tmp_path / "mine", tmp_path / "mine" / "dataset.json")
