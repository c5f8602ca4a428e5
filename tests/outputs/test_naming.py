"""Output names: distinct per input, deterministic, the plain stem when nothing clashes."""

from pathlib import Path

import pytest

from medattn3d.outputs.naming import (
    case_output_names,
    check_formats,
    expected_outputs,
    output_name,
    output_names,
    split_name,
)


def test_plain_stem_without_clash(tmp_path):
    inputs = [tmp_path / "a.nii.gz", tmp_path / "b.nrrd", tmp_path / "c.mha"]
    assert [output_name(p, inputs) for p in inputs] == ["a", "b", "c"]


def test_same_stem_different_extension_gives_two_names(tmp_path):
    inputs = [tmp_path / "case.nii.gz", tmp_path / "case.nrrd"]
    names = [output_name(p, inputs) for p in inputs]
    assert names == ["case_nii_gz", "case_nrrd"]
    assert output_name(inputs[1], list(reversed(inputs))) == "case_nrrd"  # order does not matter


def test_same_file_name_in_two_folders_and_case_insensitive_clash(tmp_path):
    inputs = [tmp_path / "x" / "case.nii.gz", tmp_path / "y" / "case.nii.gz", tmp_path / "x" / "CASE.nii"]
    names = output_names(inputs)
    assert len({n.casefold() for n in names.values()}) == 3
    assert names[inputs[0]] == "x_case_nii_gz" and names[inputs[1]] == "y_case_nii_gz"


def test_escalation_never_collides_with_an_existing_name(tmp_path):
    inputs = [tmp_path / "case.nii.gz", tmp_path / "case.nrrd", tmp_path / "case_nrrd.nii"]
    names = list(output_names(inputs).values())
    assert len(set(names)) == 3


def test_dicom_folder_is_named_after_the_folder(tmp_path):
    series = tmp_path / "CT_1.2.3"
    series.mkdir()
    assert split_name(series) == ("CT_1.2.3", "")
    assert output_name(series, [series, tmp_path / "other.nii.gz"]) == "CT_1.2.3"
    assert output_name(series, [series, tmp_path / "CT_1.2.3.nii.gz"]) == "CT_1.2.3_dicom"


def test_expected_outputs_and_formats():
    files = expected_outputs(Path("/o"), "a", ["nrrd", "nifti"], save_probabilities=True)
    assert [f.name for f in files] == [
        "a_seg.seg.nrrd",
        "a_seg.nii.gz",
        "a_seg.json",
        "a_seg.ctbl",
        "a_seg.itksnap.txt",
        "a_probabilities.nii.gz",
    ]
    with pytest.raises(ValueError, match="unknown output format 'png'"):
        check_formats(["nifti", "png"])


def test_case_given_one_file_per_channel_is_named_after_the_case(tmp_path):
    brats = [tmp_path / f"brats_001_{c:04d}.nii.gz" for c in range(4)]
    single = tmp_path / "scan_0003.nii.gz"  # one file that merely ends in four digits keeps its name
    other = tmp_path / "b" / "brats_001.nii.gz"  # a single-file case of the same name elsewhere: both stay distinct
    names = case_output_names([brats, str(single), other])
    assert names[brats[0]] == f"{tmp_path.name}_brats_001_nii_gz" and names[other] == "b_brats_001_nii_gz"
    assert names[single] == "scan_0003"
    assert case_output_names([brats])[brats[0]] == "brats_001"
    assert case_output_names([[str(p) for p in brats]])[brats[0]] == "brats_001"
