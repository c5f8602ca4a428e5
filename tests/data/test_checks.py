"""Content checks: each bad input is refused with the file and the problem named, before any processing."""

import numpy as np
import pytest
import torch

from medattn3d.data.loading import CheckVolumed, load_volume, minimum_shape
from medattn3d.data.transforms import ct_transforms
from medattn3d.errors import InputError, find_input_error
from tests.helpers import save_nifti


def _pair(tmp_path, image, label, image_affine=None, label_affine=None):
    image_path = save_nifti(image, np.eye(4) if image_affine is None else image_affine, tmp_path / "img.nii.gz")
    label_path = save_nifti(label, np.eye(4) if label_affine is None else label_affine, tmp_path / "lab.nii.gz")
    return {"image": load_volume(image_path), "label": load_volume(label_path)}


GOOD_IMAGE = np.zeros((16, 16, 8), np.float32)
GOOD_LABEL = np.zeros((16, 16, 8), np.uint8)


def test_good_pair_passes(tmp_path):
    data = _pair(tmp_path, GOOD_IMAGE, GOOD_LABEL)
    assert CheckVolumed(num_classes=2)(data)["image"] is data["image"]


@pytest.mark.parametrize(
    ("image", "label", "kwargs", "message"),
    [
        (np.full((16, 16, 8), np.nan, np.float32), GOOD_LABEL, {}, r"img.nii.gz: contains 2048 non-finite"),
        (np.zeros((16, 16, 8, 3), np.float32), GOOD_LABEL, {}, r"img.nii.gz: is 4D \(shape \(16, 16, 8, 3\)\)"),
        (np.zeros((16, 16, 2), np.float32), np.zeros((16, 16, 2), np.uint8), {}, r"is too small: shape \(16, 16, 2\)"),
        (GOOD_IMAGE, np.zeros((16, 16, 9), np.uint8), {}, r"lab.nii.gz: label shape \(16, 16, 9\) differs"),
        (GOOD_IMAGE, np.full((16, 16, 8), 5, np.uint8), {"num_classes": 3}, r"label values \[5\] lie outside the 3"),
        (GOOD_IMAGE, np.full((16, 16, 8), 0.5, np.float32), {}, r"label holds non-integer values, e.g. 0.5"),
        (GOOD_IMAGE, GOOD_LABEL, {"channels": 4}, r"has 1 channel \(shape \(16, 16, 8\)\) where 4 are expected"),
    ],
)
def test_bad_content_is_refused(tmp_path, image, label, kwargs, message):
    data = _pair(tmp_path, image, label)
    with pytest.raises(InputError, match=message):
        CheckVolumed(**kwargs)(data)


def test_label_in_another_space_is_refused(tmp_path):
    shifted = np.eye(4)
    shifted[0, 3] = 5.0
    data = _pair(tmp_path, GOOD_IMAGE, GOOD_LABEL, label_affine=shifted)
    with pytest.raises(InputError, match=r"label affine differs from its image's .* by up to 5 mm"):
        CheckVolumed()(data)


def test_two_dimensional_image_is_refused(tmp_path):
    path = save_nifti(np.zeros((16, 16), np.float32), np.eye(4), tmp_path / "flat.nii.gz")
    with pytest.raises(InputError, match=r"flat.nii.gz: is 2D \(shape \(16, 16\)\) where a 3D volume is expected"):
        CheckVolumed(label_key=None)({"image": load_volume(path)})
    # check-data and plan read the voxels: they give the same hint as infer's header pass
    with pytest.raises(InputError, match=r"a 2D bundle takes it saved as a one-slice volume, shape \(X, Y, 1\)"):
        CheckVolumed(label_key=None)({"image": load_volume(path)})


def test_preset_pipeline_stops_before_processing_and_keeps_the_message(tmp_path):
    bad = save_nifti(np.full((16, 16, 8), np.inf, np.float32), np.eye(4), tmp_path / "inf.nii.gz")
    with pytest.raises(Exception) as info:  # MONAI's Compose wraps transform errors
        ct_transforms("infer", pixdim=None)({"image": str(bad)})
    found = find_input_error(info.value)
    assert found is not None and found.path.endswith("inf.nii.gz") and "non-finite" in found.problem


@pytest.mark.parametrize("name", ["spleen_ct", "brain_mri", "abdomen_ct_14", "prostate_two_files"])
def test_dataset_check_passes_clean_datasets_and_finds_the_planted_problem(tmp_path, name):
    from medattn3d.data.check import check_dataset
    from tests.planning.datasets import DATASETS, write_broken

    assert check_dataset(DATASETS[name](tmp_path / "clean")) == []
    path, fragment = write_broken(name, tmp_path / "broken")
    problems = check_dataset(path)
    assert len(problems) == 1 and fragment in problems[0], problems


def test_dataset_check_lists_every_problem_one_line_each(tmp_path):
    import json

    from medattn3d.data.check import check_dataset, main
    from tests.planning.datasets import write_spleen_ct

    path = write_spleen_ct(tmp_path)
    data = json.loads(path.read_text(encoding="utf-8"))
    data["labels"] = {"0": "background", "2": "spleen"}
    data["modality"] = {"0": "CT", "1": "PET"}
    data["training"].append(dict(data["training"][0]))  # listed twice
    data["training"].append({"image": "./imagesTr/spleen_2.nii.gz"})  # no label
    data["test"].append(["./imagesTs/spleen_1.nii.gz", "./imagesTs/missing.nii.gz"])
    path.write_text(json.dumps(data))
    problems = check_dataset(path)
    assert all("\n" not in line for line in problems)
    expected = [
        "label values [1] are not among the dataset's labels 0, 2",  # labels may skip values, the files must match
        "has 1 channel (shape (32, 32, 16)) where 2 are expected",  # every image: modality names 2 channels
        "spleen_2.nii.gz is listed twice ('training' and 'training')",
        "the 'training' entry for ./imagesTr/spleen_2.nii.gz has no 'label' path",
        "imagesTs/missing.nii.gz: file not found",
    ]
    for fragment in expected:
        assert any(fragment in line for line in problems), (fragment, problems)
    assert main([str(path)]) == 1


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.int32, torch.int64, torch.float32])
def test_label_values_equal_torch_unique(dtype):
    from medattn3d.data.loading import label_values

    labels = torch.randint(0, 14, (20, 20, 10)).to(dtype)
    labels[labels == 5] = 0  # a gap
    assert torch.equal(label_values(labels), torch.unique(labels))
    if not dtype.is_floating_point and dtype != torch.uint8:
        labels[0, 0, 0] = -3
        assert torch.equal(label_values(labels), torch.unique(labels))


def test_dataset_check_in_worker_processes_gives_the_same_lines(tmp_path, monkeypatch):
    from medattn3d.data import workers as pools
    from medattn3d.data.check import check_dataset
    from tests.planning.datasets import write_broken

    path, fragment = write_broken("prostate_two_files", tmp_path)
    (tmp_path / "labelsTr" / "prostate_00.nii.gz").unlink()
    serial = check_dataset(path)
    monkeypatch.setattr(pools, "MIN_BYTES_FOR_WORKERS", 0)
    assert check_dataset(path, workers=2) == serial
    assert len(serial) == 2 and "prostate_00.nii.gz: file not found" in serial[0] and fragment in serial[1]


def test_every_problem_of_one_case_is_reported(tmp_path):
    image = np.zeros((16, 16, 8), np.float32)
    image[0, 0, 0] = np.nan
    shifted = np.eye(4)
    shifted[1, 3] = 3.0
    data = _pair(tmp_path, image, np.full((16, 16, 8), 7, np.uint8), label_affine=shifted)
    problems = [str(p) for p in CheckVolumed(num_classes=3, channels=2).problems(data)]
    assert len(problems) == 4, problems
    assert "has 1 channel" in problems[0] and "contains 1 non-finite" in problems[1]
    assert "label affine differs" in problems[2] and "label values [7] lie outside the 3 classes" in problems[3]
    with pytest.raises(InputError, match="has 1 channel"):  # the transform stops at the first
        CheckVolumed(num_classes=3, channels=2)(data)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_count_equals_isfinite(bad):
    from monai.data import MetaTensor

    from medattn3d.data.loading import non_finite_count

    values = torch.randn(9, 8, 7, generator=torch.Generator().manual_seed(0))
    assert non_finite_count(values) == 0 and non_finite_count(MetaTensor(values)) == 0
    values[1, 2, 3] = values[4, 5, 6] = bad
    assert non_finite_count(values) == int((~torch.isfinite(values)).sum()) == 2
    assert non_finite_count(values.numpy()) == 2
    assert non_finite_count(torch.ones(3, 3, dtype=torch.int16)) == 0


def test_a_two_d_bundle_takes_a_single_slice_and_a_three_d_one_does_not(tmp_path):
    """A 2D network runs slice by slice, so one image stored as an (X, Y, 1) volume is a whole input for it."""
    from medattn3d.data.inputs import check_header

    path = save_nifti(np.zeros((96, 80, 1), np.float32), np.eye(4), tmp_path / "slice.nii.gz")
    data = ct_transforms("infer", pixdim=None, spatial_dims=2, roi_size=(32, 32))({"image": str(path)})
    assert tuple(data["image"].shape) == (1, 96, 80, 1)
    check_header(path, min_size=minimum_shape(2))
    with pytest.raises(InputError, match=r"slice.nii.gz: is too small: shape \(96, 80, 1\) has axis 2 below the min"):
        check_header(path, min_size=minimum_shape(3))
    with pytest.raises(Exception) as info:
        ct_transforms("infer", pixdim=None)({"image": str(path)})
    assert "below the minimum of 4 voxels" in find_input_error(info.value).problem
    flat = save_nifti(np.zeros((96, 80), np.float32), np.eye(4), tmp_path / "flat.nii.gz")
    with pytest.raises(InputError, match=r"a 2D bundle takes it saved as a one-slice volume, shape \(X, Y, 1\)"):
        check_header(flat, min_size=minimum_shape(2))


def test_dataset_check_for_a_two_d_network_takes_single_slices(tmp_path):
    import json

    from medattn3d.data.check import check_dataset

    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    label = np.zeros((32, 30, 1), np.uint8)
    label[8:20, 8:20] = 1
    save_nifti(np.zeros((32, 30, 1), np.float32), np.eye(4), tmp_path / "imagesTr" / "s.nii.gz")
    save_nifti(label, np.eye(4), tmp_path / "labelsTr" / "s.nii.gz")
    manifest = {
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "blob"},
        "training": [{"image": "./imagesTr/s.nii.gz", "label": "./labelsTr/s.nii.gz"}],
    }
    (tmp_path / "dataset.json").write_text(json.dumps(manifest))
    assert check_dataset(tmp_path / "dataset.json", spatial_dims=2) == []
    problems = check_dataset(tmp_path / "dataset.json")
    assert len(problems) == 1 and "s.nii.gz: is too small: shape (32, 30, 1)" in problems[0]
