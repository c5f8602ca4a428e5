"""Per-channel normalisation from a plan, against plain numpy; and the presets that use it."""

import numpy as np
import pytest
import torch

from medattn3d.data.normalization import NormalizeChannelsd, check_normalization
from medattn3d.data.transforms import segmentation_transforms
from tests.helpers import save_nifti

CT = {"scheme": "ct", "lower": -50.0, "upper": 200.0, "mean": 80.0, "std": 40.0}


def _zscore_nonzero(channel: np.ndarray) -> np.ndarray:
    out = channel.astype(np.float64).copy()
    mask = channel != 0
    out[mask] = (channel[mask] - channel[mask].mean()) / channel[mask].std()
    return out


def test_each_channel_gets_its_own_scheme():
    rng = np.random.default_rng(0)
    ct = rng.normal(50, 150, size=(12, 10, 8))
    mri = np.where(rng.random((12, 10, 8)) < 0.3, 0.0, rng.normal(500, 80, size=(12, 10, 8)))
    image = torch.as_tensor(np.stack([ct, mri]), dtype=torch.float32)
    out = NormalizeChannelsd("image", [CT, {"scheme": "zscore"}])({"image": image})["image"]
    assert out.dtype == torch.float32 and out.shape == image.shape
    expected_ct = (np.clip(image[0].double().numpy(), -50, 200) - 80) / 40
    np.testing.assert_allclose(out[0].numpy(), expected_ct, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out[1].numpy(), _zscore_nonzero(image[1].double().numpy()), rtol=1e-4, atol=1e-4)
    assert (out[1][image[1] == 0] == 0).all()  # zero voxels (outside a skull-stripped brain) stay background


def test_zscore_channels_are_normalised_separately():
    rng = np.random.default_rng(1)
    image = torch.as_tensor(np.stack([rng.normal(10, 2, (6, 6, 6)), rng.normal(1000, 300, (6, 6, 6))]))
    out = NormalizeChannelsd("image", [{"scheme": "zscore"}] * 2)({"image": image})["image"]
    for c in range(2):
        np.testing.assert_allclose(out[c].numpy(), _zscore_nonzero(image[c].numpy()), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("normalization", "message"),
    [
        ([], "non-empty list"),
        ({"scheme": "zscore"}, "non-empty list"),
        ([{"scheme": "minmax"}], r"normalization\[0\] must be a dict with 'scheme'"),
        ([{"scheme": "ct", "lower": 0, "upper": 1, "mean": 0}], r"normalization\[0\] \(ct\) lacks std"),
        ([{**CT, "std": 0}], "std must be positive"),
        ([{**CT, "lower": 300}], "lower 300.0 > upper 200.0"),
        ([{**CT, "mean": float("nan")}], "non-finite"),
    ],
)
def test_bad_plans_are_refused(normalization, message):
    with pytest.raises(ValueError, match=message):
        check_normalization(normalization)


def test_channel_count_must_match():
    with pytest.raises(ValueError, match=r"normalization has 1 channel\(s\), the image 2"):
        NormalizeChannelsd("image", [CT])({"image": torch.zeros(2, 4, 4, 4)})
    with pytest.raises(ValueError, match=r"normalization has 2 entries for 1 channel"):
        segmentation_transforms("infer", pixdim=None, normalization=[CT, CT])


def test_preset_applies_the_plan_instead_of_the_hu_window(tmp_path):
    rng = np.random.default_rng(2)
    array = rng.normal(40, 100, size=(16, 12, 8)).astype(np.float32)
    path = save_nifti(array, np.eye(4), tmp_path / "ct.nii.gz")
    planned = segmentation_transforms("infer", pixdim=None, normalization=[CT])({"image": str(path)})["image"]
    np.testing.assert_allclose(planned[0].numpy(), (np.clip(array, -50, 200) - 80) / 40, rtol=1e-5, atol=1e-5)
    windowed = segmentation_transforms("infer", pixdim=None)({"image": str(path)})["image"]  # today's default
    np.testing.assert_allclose(windowed[0].numpy(), np.clip((array + 175) / 425, 0, 1), rtol=1e-5, atol=1e-6)


def test_training_patches_with_a_plan(tmp_path):
    rng = np.random.default_rng(3)
    image = save_nifti(rng.normal(0, 100, (20, 20, 12)).astype(np.float32), np.eye(4), tmp_path / "i.nii.gz")
    label_array = np.zeros((20, 20, 12), np.uint8)
    label_array[5:10, 5:10, 3:6] = 1
    label = save_nifti(label_array, np.eye(4), tmp_path / "l.nii.gz")
    train = segmentation_transforms(
        "train", roi_size=(8, 8, 8), pixdim=None, normalization=[CT], num_classes=2, num_samples=3
    )
    samples = train({"image": str(image), "label": str(label)})
    assert len(samples) == 3 and all(s["image"].shape == (1, 8, 8, 8) for s in samples)
