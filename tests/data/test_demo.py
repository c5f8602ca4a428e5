"""The embedded demo dataset: deterministic, Decathlon-shaped, and not solvable by thresholding."""

import json

import nibabel as nib
import numpy as np
import pytest

from medattn3d.data.check import check_manifest
from medattn3d.data.demo import LABELS, generate_demo_dataset, synthesize_case
from medattn3d.data.manifest import load_datalist


def test_same_seed_same_case_other_seed_other_case():
    a_image, a_label, a_affine = synthesize_case(3, shape=(48, 48, 24))
    b_image, b_label, b_affine = synthesize_case(3, shape=(48, 48, 24))
    _, c_label, _ = synthesize_case(4, shape=(48, 48, 24))
    assert np.array_equal(a_image, b_image) and np.array_equal(a_label, b_label) and np.array_equal(a_affine, b_affine)
    assert not np.array_equal(a_label, c_label)


def test_every_organ_present_with_plausible_intensities():
    image, label, affine = synthesize_case(0)
    assert image.dtype == np.float32 and label.dtype == np.uint8
    assert set(np.unique(label)) == {0, 1, 2, 3}
    assert np.allclose(np.diag(affine)[:3], [2.5, 2.5, 4.0])  # anisotropic
    for k, expected in ((1, 60), (2, 50), (3, 135)):
        assert abs(float(np.median(image[label == k])) - expected) < 25
    assert float(image.min()) < -900  # air around the body


@pytest.mark.parametrize("seed", [0, 7])
def test_no_intensity_window_segments_an_organ(seed):
    """The best [low, high) HU window per organ stays far from a learnt segmentation."""
    image, label, _ = synthesize_case(seed)
    for k in (1, 2, 3):
        organ = label == k
        best = 0.0
        for low in range(-60, 300, 10):
            for high in range(low + 10, 320, 10):
                window = (image >= low) & (image < high)
                best = max(best, 2 * np.sum(window & organ) / (np.sum(window) + np.sum(organ)))
        assert best < 0.7, f"organ {LABELS[str(k)]}: a threshold window reaches Dice {best:.2f}"


def test_generated_tree_is_a_valid_manifest_and_is_reused(tmp_path):
    manifest = generate_demo_dataset(tmp_path, num_train=2, num_val=1, num_test=1, shape=(32, 32, 16))
    data = json.loads(manifest.read_text())
    assert data["labels"] == LABELS and data["modality"] == {"0": "CT"}
    assert len(data["training"]) == 2 and len(data["validation"]) == 1 and len(data["test"]) == 1
    assert check_manifest(manifest) == []
    first = load_datalist(manifest, "training")[0]
    assert nib.load(first["image"]).shape == (32, 32, 16)
    stamp = manifest.stat().st_mtime_ns
    generate_demo_dataset(tmp_path, num_train=2, num_val=1, num_test=1, shape=(32, 32, 16))
    assert manifest.stat().st_mtime_ns == stamp  # same settings: nothing rewritten
    assert not list(tmp_path.rglob("*.tmp*"))
