"""Multi-channel images: a 4D NIfTI with channels last and one file (or DICOM series) per channel, through the
preprocessing and back into the input's geometry; mismatched channel files are refused naming the file."""

import nibabel as nib
import numpy as np
import pytest
from monai.transforms import Invertd

from medattn3d.data.loading import load_volume
from medattn3d.data.transforms import segmentation_transforms
from medattn3d.errors import InputError, find_input_error
from tests.helpers import save_nifti, write_dicom_series
from tests.planning import datasets

# clipping to +-1e9 and (x - 0) / 1: an identity, so inverted images can be compared voxel for voxel
IDENTITY = {"scheme": "ct", "lower": -1e9, "upper": 1e9, "mean": 0.0, "std": 1.0}


def _brain(tmp_path):
    """The LPS-stored 4D case of the brain dataset: its datalist image and the stored channels-last array."""
    datasets.write_brain_mri(tmp_path)
    path = tmp_path / "imagesTr" / "BRATS_003.nii.gz"
    return str(path), nib.load(str(path))


def _prostate(tmp_path):
    """The LPS-stored two-file case: its list of channel files, and the stacked stored array (channels last)."""
    datasets.write_prostate_two_files(tmp_path)
    files = [str(tmp_path / "imagesTr" / f"prostate_04_000{c}.nii.gz") for c in range(2)]
    stack = np.stack([np.asanyarray(nib.load(f).dataobj) for f in files], -1)
    return files, nib.Nifti1Image(stack, nib.load(files[0]).affine)


def _round_trip(image, channels, pixdim):
    pre = segmentation_transforms("infer", pixdim=pixdim, channels=channels, normalization=[IDENTITY] * channels)
    data = pre({"image": image})
    processed = data["image"]
    data["pred"] = processed.clone()
    inverted = Invertd("pred", transform=pre, orig_keys="image", nearest_interp=False)(data)["pred"]
    return processed, inverted


@pytest.mark.parametrize("make", [_brain, _prostate], ids=["4d_file", "file_per_channel"])
def test_round_trip_without_resampling_is_voxel_exact(tmp_path, make):
    image, stored = make(tmp_path)
    processed, inverted = _round_trip(image, 4 if make is _brain else 2, pixdim=None)
    array = np.asanyarray(stored.dataobj).astype(np.float32)
    ras_shape = nib.as_closest_canonical(stored).shape
    assert tuple(processed.shape) == (array.shape[3], *ras_shape[:3])  # channel first, reoriented (LPS -> RAS)
    assert tuple(inverted.shape) == (array.shape[3], *array.shape[:3])
    np.testing.assert_array_equal(np.moveaxis(inverted.numpy(), 0, -1), array)
    np.testing.assert_allclose(inverted.affine.numpy(), stored.affine, atol=1e-5)


@pytest.mark.parametrize("make", [_brain, _prostate], ids=["4d_file", "file_per_channel"])
def test_round_trip_with_resampling_returns_the_input_geometry(tmp_path, make):
    image, stored = make(tmp_path)
    channels = 4 if make is _brain else 2
    processed, inverted = _round_trip(image, channels, pixdim=(1.5, 1.5, 2.0))
    canonical = nib.as_closest_canonical(stored)
    zooms = canonical.header.get_zooms()[:3]
    expected = [n * s / p for n, s, p in zip(canonical.shape[:3], zooms, (1.5, 1.5, 2.0), strict=True)]
    assert processed.shape[0] == channels
    assert all(abs(a - b) <= 1 for a, b in zip(processed.shape[1:], expected, strict=True))
    assert tuple(inverted.shape) == (channels, *stored.shape[:3])
    np.testing.assert_allclose(inverted.affine.numpy(), stored.affine, atol=1e-5)
    array = np.moveaxis(np.asanyarray(stored.dataobj).astype(np.float32), -1, 0)
    for c in range(channels):  # smooth enough after a down-and-up resampling: the channels keep their order
        assert np.corrcoef(inverted[c].numpy().ravel(), array[c].ravel())[0, 1] > 0.5


def test_training_and_validation_stages_take_both_forms(tmp_path):
    files, _ = _prostate(tmp_path)
    label = str(tmp_path / "labelsTr" / "prostate_04.nii.gz")
    norm = [{"scheme": "zscore"}] * 2
    train = segmentation_transforms("train", roi_size=(16, 16, 8), pixdim=None, channels=2, num_classes=3,
                                    normalization=norm)  # fmt: skip
    samples = train({"image": files, "label": label})
    assert all(s["image"].shape == (2, 16, 16, 8) and s["label"].shape == (1, 16, 16, 8) for s in samples)
    val = segmentation_transforms("val", roi_size=(16, 16), spatial_dims=2, pixdim=None, channels=2, num_classes=3,
                                  normalization=norm)  # fmt: skip
    assert val({"image": files, "label": label})["image"].shape == (2, 32, 32, 16)


def test_channel_list_keeps_order_name_and_affine(tmp_path):
    files, stored = _prostate(tmp_path)
    volume = load_volume(files)
    assert tuple(volume.shape) == stored.shape and volume.meta["filename_or_obj"] == files[0]
    np.testing.assert_array_equal(volume.numpy(), np.asanyarray(stored.dataobj))
    np.testing.assert_allclose(volume.affine.numpy(), stored.affine, atol=1e-6)
    assert tuple(load_volume(files[:1]).shape) == (*stored.shape[:3], 1)


def test_one_dicom_series_per_channel(tmp_path):
    rng = np.random.default_rng(0)
    first, second = (rng.integers(0, 1000, size=(4, 10, 12)).astype(np.int16) for _ in range(2))
    write_dicom_series(first, tmp_path / "T2", series_uid="1.2.826.0.1.3680043.2.1125.1.51")
    write_dicom_series(second, tmp_path / "ADC", series_uid="1.2.826.0.1.3680043.2.1125.1.52")
    volume = load_volume([tmp_path / "T2", tmp_path / "ADC"])
    single = load_volume(tmp_path / "T2")
    assert tuple(volume.shape) == (*single.shape, 2)
    np.testing.assert_array_equal(volume[..., 0].numpy(), single.numpy())
    np.testing.assert_array_equal(volume[..., 1].numpy(), load_volume(tmp_path / "ADC").numpy())


def test_mismatched_channel_files_are_refused_naming_the_file(tmp_path):
    t2 = save_nifti(np.zeros((8, 8, 4), np.float32), np.eye(4), tmp_path / "t2.nii.gz")
    small = save_nifti(np.zeros((8, 8, 3), np.float32), np.eye(4), tmp_path / "small.nii.gz")
    moved_affine = np.eye(4)
    moved_affine[2, 3] = 2.0
    moved = save_nifti(np.zeros((8, 8, 4), np.float32), moved_affine, tmp_path / "moved.nii.gz")
    four_d = save_nifti(np.zeros((8, 8, 4, 2), np.float32), np.eye(4), tmp_path / "4d.nii.gz")
    with pytest.raises(InputError, match=r"small.nii.gz: channel shape \(8, 8, 3\) differs from the first channel's"):
        load_volume([t2, small])
    with pytest.raises(InputError, match=r"moved.nii.gz: channel affine differs from the first channel's .* 2 mm"):
        load_volume([t2, moved])
    with pytest.raises(InputError, match=r"4d.nii.gz: is 4D \(shape \(8, 8, 4, 2\)\): each channel file must hold"):
        load_volume([four_d, t2])
    with pytest.raises(InputError, match=r"missing.nii.gz: file not found"):
        load_volume([t2, tmp_path / "missing.nii.gz"])
    with pytest.raises(Exception) as info:
        segmentation_transforms("infer", pixdim=None, channels=2)({"image": [str(t2), str(small)]})
    assert find_input_error(info.value).path.endswith("small.nii.gz")


def test_channel_count_must_match_the_plan(tmp_path):
    files, _ = _prostate(tmp_path)
    with pytest.raises(Exception) as info:
        segmentation_transforms("infer", pixdim=None, channels=3)({"image": files})
    assert "where a 3D volume with 3 channel(s) is expected" in find_input_error(info.value).problem


@pytest.mark.parametrize("make", [_brain, _prostate], ids=["4d_file", "file_per_channel"])
def test_prediction_is_written_in_the_input_geometry(tmp_path, make):
    import torch

    from medattn3d.outputs import write_case

    image, stored = make(tmp_path / "data")
    channels = 4 if make is _brain else 2
    pre = segmentation_transforms("infer", pixdim=(1.5, 1.5, 2.0), channels=channels,
                                  normalization=[{"scheme": "zscore"}] * channels)  # fmt: skip
    data = pre({"image": image})
    logits = torch.zeros((3, *data["image"].shape[1:]))
    logits[1] = data["image"][0]  # class 1 where the first channel is bright: a prediction tied to the anatomy
    written = write_case(logits, data, pre, tmp_path / "out", "case", class_names=["background", "a", "b"])
    seg = nib.load(str(next(p for p in written if p.name.endswith(".nii.gz"))))
    assert seg.shape == stored.shape[:3]
    np.testing.assert_allclose(seg.affine, stored.affine, atol=1e-5)
    assert set(np.unique(np.asanyarray(seg.dataobj))) <= {0, 1}
