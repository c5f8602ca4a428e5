"""Label values that are not 0 .. n - 1 (BraTS: 0, 1, 2, 4): checked, trained as class indices, written back."""

import json

import numpy as np
import pytest

from medattn3d.data.classes import class_values, is_identity
from medattn3d.data.loading import CheckVolumed, load_volume
from medattn3d.data.transforms import ct_transforms
from medattn3d.errors import InputError, find_input_error
from tests.helpers import save_nifti

BRATS = {"0": "background", "1": "necrosis", "2": "edema", "4": "enhancing tumour"}


def test_class_values_come_from_the_label_keys():
    assert class_values(BRATS) == [0, 1, 2, 4] and not is_identity([0, 1, 2, 4])
    assert class_values({"2": "b", "0": "a", "1": "c"}) == [0, 1, 2] and is_identity([0, 1, 2])
    assert class_values(["background", "liver"]) == [0, 1]
    assert class_values(None, 3) == [0, 1, 2]
    assert class_values({"background": "x", "liver": "y"}) == [0, 1]  # names as keys: positions


def _brats_label(tmp_path, extra_value=None):
    label = np.zeros((20, 18, 12), np.uint8)
    label[4:12, 4:12, 3:9] = 2
    label[6:10, 6:10, 4:8] = 4
    label[7:9, 7:9, 5:7] = 1
    if extra_value is not None:
        label[0, 0, 0] = extra_value
    image = save_nifti(
        np.random.default_rng(0).normal(0, 50, label.shape).astype(np.float32), np.eye(4), tmp_path / "img.nii.gz"
    )
    return image, save_nifti(label, np.eye(4), tmp_path / "lab.nii.gz"), label


def test_labels_are_mapped_to_class_indices_for_training(tmp_path):
    image, label_path, label = _brats_label(tmp_path)
    pipeline = ct_transforms("val", pixdim=None, num_classes=4, class_values=class_values(BRATS))
    mapped = np.asarray(pipeline({"image": str(image), "label": str(label_path)})["label"][0])
    expected = np.zeros_like(label)
    for index, value in enumerate([0, 1, 2, 4]):
        expected[label == value] = index
    assert np.array_equal(mapped, expected)


def test_a_value_outside_the_datasets_labels_is_refused_naming_the_file(tmp_path):
    image, label_path, _ = _brats_label(tmp_path, extra_value=3)
    data = {"image": load_volume(image), "label": load_volume(label_path)}
    with pytest.raises(
        InputError, match=r"lab.nii.gz: label values \[3\] are not among the dataset's labels 0, 1, 2, 4"
    ):
        CheckVolumed(num_classes=4, class_values=[0, 1, 2, 4])(data)
    with pytest.raises(Exception) as info:
        ct_transforms("val", pixdim=None, class_values=[0, 1, 2, 4])({"image": str(image), "label": str(label_path)})
    assert "are not among the dataset's labels" in find_input_error(info.value).problem


def test_dataset_check_takes_brats_labels_and_refuses_keys_that_are_not_values(tmp_path):
    from medattn3d.data.check import check_dataset

    image, label_path, _ = _brats_label(tmp_path)
    manifest = {"modality": {"0": "CT"}, "labels": BRATS, "training": [{"image": image.name, "label": label_path.name}]}
    (tmp_path / "dataset.json").write_text(json.dumps(manifest))
    assert check_dataset(tmp_path / "dataset.json") == []
    manifest["labels"] = {"background": "0", "tumour": "1"}
    (tmp_path / "dataset.json").write_text(json.dumps(manifest))
    problems = check_dataset(tmp_path / "dataset.json")
    assert any("'labels' keys must be the label values in the files" in line for line in problems), problems
