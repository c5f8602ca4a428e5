"""Transform presets: patch shapes, intensity normalisation, 2D slices, config use, argument errors."""

import json

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from medattn3d.data.transforms import ct_transforms, mri_transforms, segmentation_transforms
from tests.helpers import blob_mask, save_nifti


@pytest.fixture
def ct_pair(tmp_path):
    shape = (48, 40, 24)
    rng = np.random.default_rng(0)
    image = rng.normal(40, 300, shape).astype(np.float32)
    affine = np.diag([1.2, 1.2, 3.0, 1.0])
    return {
        "image": str(save_nifti(image, affine, tmp_path / "ct.nii.gz")),
        "label": str(save_nifti(blob_mask(shape), affine, tmp_path / "ct_label.nii.gz")),
    }


def test_ct_train_preset_gives_windowed_patches(ct_pair):
    samples = ct_transforms("train", roi_size=(32, 32, 16), pixdim=(1.5, 1.5, 2.0), num_samples=3, num_classes=3)(
        ct_pair
    )
    assert len(samples) == 3
    for sample in samples:
        assert sample["image"].shape == (1, 32, 32, 16) and sample["label"].shape == (1, 32, 32, 16)
        assert float(sample["image"].min()) >= -0.2 and float(sample["image"].max()) <= 1.2  # [0, 1] +- intensity aug
        assert set(torch.unique(sample["label"]).tolist()) <= {0, 1, 2}


def test_val_preset_keeps_the_whole_resampled_volume(ct_pair):
    data = ct_transforms("val", pixdim=(1.5, 1.5, 2.0))(ct_pair)
    assert data["image"].shape == data["label"].shape
    assert data["image"].pixdim.tolist() == pytest.approx([1.5, 1.5, 2.0])
    assert float(data["image"].min()) >= 0.0 and float(data["image"].max()) <= 1.0


def test_hu_window_maps_linearly_to_unit_range(tmp_path):
    image = np.tile(np.linspace(-500, 500, 11, dtype=np.float32), (8, 8, 1))
    path = save_nifti(image, np.eye(4), tmp_path / "ramp.nii.gz")
    out = np.asarray(
        ct_transforms("infer", pixdim=None, axcodes=None, hu_window=(-100, 300))({"image": str(path)})["image"]
    )
    assert np.allclose(out[0], np.clip((image + 100) / 400, 0, 1), atol=1e-6)


def test_mri_zscore_and_percentile(tmp_path):
    rng = np.random.default_rng(2)
    image = np.zeros((20, 20, 20), np.float32)
    image[4:16, 4:16, 4:16] = rng.normal(300, 40, (12, 12, 12))
    path = str(save_nifti(image, np.eye(4), tmp_path / "mr.nii.gz"))
    z = np.asarray(mri_transforms("infer", pixdim=None)({"image": path})["image"])[0]
    inside = z[4:16, 4:16, 4:16]
    assert abs(inside.mean()) < 1e-4 and abs(inside.std() - 1) < 1e-3 and np.all(z[0] == 0)
    p = np.asarray(mri_transforms("infer", pixdim=None, mri_normalization="percentile")({"image": path})["image"])
    assert float(p.min()) == 0.0 and float(p.max()) == 1.0


def test_2d_preset_trains_on_axial_slices(ct_pair):
    samples = ct_transforms("train", spatial_dims=2, roi_size=(32, 32), pixdim=None, num_samples=2)(ct_pair)
    assert [tuple(s["image"].shape) for s in samples] == [(1, 32, 32)] * 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"stage": "test"}, "stage must be one of"),
        ({"modality": "pet", "stage": "infer"}, "modality must be one of"),
        ({"roi_size": (32, 32)}, "roi_size"),
        ({"modality": "mri", "mri_normalization": "minmax"}, "mri_normalization"),
    ],
)
def test_bad_preset_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        segmentation_transforms(**kwargs)


def test_presets_build_from_a_bundle_config(tmp_path, ct_pair):
    config = {
        "preprocessing": {"_target_": "medattn3d.data.transforms.ct_transforms", "stage": "infer", "pixdim": None}
    }
    (tmp_path / "c.json").write_text(json.dumps(config))
    parser = ConfigParser()
    parser.read_config(str(tmp_path / "c.json"))
    out = parser.get_parsed_content("preprocessing")({"image": ct_pair["image"]})
    assert out["image"].shape == (1, 48, 40, 24)


def test_class_balanced_crops_centre_on_the_drawn_class(tmp_path):
    """With crop_ratios every patch is centred on a voxel of a class drawn by those weights: weight only on a
    tiny class means every patch holds it at its centre, though it is 0.02 % of the volume."""
    image = np.random.default_rng(0).normal(40, 10, (64, 64, 32)).astype(np.float32)
    label = np.zeros(image.shape, np.uint8)
    label[10:50, 10:50, 5:25] = 1  # a large organ
    label[30:32, 40:42, 20:22] = 2  # a lesion of 8 voxels
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    data = {
        "image": str(save_nifti(image, affine, tmp_path / "i.nii.gz")),
        "label": str(save_nifti(label, affine, tmp_path / "l.nii.gz")),
    }
    pipeline = segmentation_transforms(
        "train",
        "ct",
        3,
        roi_size=(16, 16, 8),
        pixdim=None,
        axcodes=None,
        num_classes=3,
        num_samples=6,
        crop_ratios=[0, 0, 1],
    )
    pipeline.set_random_state(0)
    patches = pipeline(data)
    assert len(patches) == 6
    for patch in patches:
        centre = patch["label"][0, 8, 8, 4]
        assert int(centre) == 2
