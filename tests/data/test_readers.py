"""Readers: every supported source loads with the right values and geometry; every broken one gets a clear error."""

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch

from medattn3d.data.dicom import inspect_series
from medattn3d.data.loading import load_volume
from medattn3d.errors import InputError
from tests.helpers import oblique_affine, save_nifti, write_dicom_series

PYDICOM_SERIES = Path(pydicom.__file__).parent / "data" / "test_files" / "dicomdirtests"


def _sitk_ras_affine(image: sitk.Image) -> np.ndarray:
    """The voxel-to-RAS affine of a SimpleITK (LPS) image, computed from its geometry."""
    affine = np.eye(4)
    affine[:3, :3] = np.array(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine


def test_nifti_keeps_values_and_affine(tmp_path):
    array = np.random.default_rng(0).normal(size=(8, 9, 10)).astype(np.float32)
    affine = oblique_affine()
    image = load_volume(save_nifti(array, affine, tmp_path / "a.nii.gz"))
    assert np.allclose(np.asarray(image), array)
    assert np.allclose(np.asarray(image.affine), affine, atol=1e-5)


@pytest.mark.parametrize("dtype", ["<i2", ">i2", "<f4", ">f8", "<u2", "u1"])
def test_nifti_of_any_byte_order_and_type_loads_exactly_in_row_major_order(tmp_path, dtype):
    array = np.random.default_rng(2).integers(0, 200, size=(7, 5, 6)).astype(dtype)
    path = tmp_path / "v.nii"
    nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))
    image = load_volume(path)
    assert np.array_equal(np.asarray(image), array.astype(np.float32))
    assert image.as_tensor().is_contiguous()


@pytest.mark.parametrize("dtype", ["<i2", ">i2", "u1", "i1"])
@pytest.mark.parametrize(("slope", "inter"), [(1.0, -1024.0), (0.37, 12.3), (2.5, 0.0)])
def test_scaled_integer_nifti_loads_as_monai_casts_it(tmp_path, dtype, slope, inter):
    """int16 CT with scl_slope/scl_inter: the tile-wise float64 scaling gives MONAI's float32 values bit for bit."""
    from monai.transforms import LoadImage

    raw = np.random.default_rng(3).integers(-100 if dtype != "u1" else 0, 120, size=(21, 9, 37)).astype(dtype)
    image = nib.Nifti1Image(raw, oblique_affine())
    image.header.set_slope_inter(slope, inter)
    path = tmp_path / "scaled.nii.gz"
    nib.save(image, str(path))
    ours = load_volume(path)
    monai = LoadImage(image_only=True, dtype=np.float32, reader="NibabelReader")(str(path))
    assert ours.dtype == monai.dtype == torch.float32 and ours.as_tensor().is_contiguous()
    assert torch.equal(ours.as_tensor(), monai.as_tensor())
    assert torch.equal(ours.affine, monai.affine)
    kept = load_volume(path, dtype=None)  # labels keep the file's type: nibabel's scaled float64, untouched
    assert kept.dtype == torch.float64 and torch.equal(kept.as_tensor().float(), monai.as_tensor())


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_itk_formats_match_the_geometry_they_were_written_with(tmp_path, suffix):
    array_zyx = np.random.default_rng(1).integers(-100, 100, size=(5, 6, 7)).astype(np.int16)
    image = sitk.GetImageFromArray(array_zyx)
    image.SetSpacing((0.5, 0.75, 2.0))
    image.SetOrigin((1.0, 2.0, 3.0))
    image.SetDirection((0, 1, 0, 1, 0, 0, 0, 0, -1))
    sitk.WriteImage(image, str(tmp_path / f"v{suffix}"))
    loaded = load_volume(tmp_path / f"v{suffix}")
    assert np.array_equal(np.asarray(loaded), array_zyx.transpose(2, 1, 0))
    assert np.allclose(np.asarray(loaded.affine), _sitk_ras_affine(image), atol=1e-5)


def test_dicom_series_written_with_simpleitk_loads_in_slice_order(tmp_path):
    array = np.arange(6 * 10 * 12).reshape(6, 10, 12)
    volume = write_dicom_series(array, tmp_path / "series", direction=(0, 0, 1, 1, 0, 0, 0, 1, 0))
    loaded = load_volume(tmp_path / "series")
    assert np.array_equal(np.asarray(loaded), array.transpose(2, 1, 0))
    assert np.allclose(np.asarray(loaded.affine), _sitk_ras_affine(volume), atol=1e-4)


def test_pydicom_bundled_ct_series_loads():
    folder = PYDICOM_SERIES / "98892001" / "CT5N"
    image = load_volume(folder)
    assert tuple(image.shape) == (16, 16, 5)
    assert abs(float(np.linalg.norm(np.asarray(image.affine)[:3, 2])) - 2.5) < 1e-3  # slice spacing from positions
    assert inspect_series(folder).positions == pytest.approx((-1.2375, 1.2625, 3.7625, 6.2625, 8.7625))


def test_single_dicom_file_loads():
    image = load_volume(Path(pydicom.__file__).parent / "data" / "test_files" / "CT_small.dcm")
    assert tuple(image.shape[:2]) == (128, 128)


@pytest.mark.parametrize(
    ("relative", "message"),
    [
        ("77654033/CT2", r"has a gap or uneven spacing: 202 mm between 17106 and 17136"),
        ("98892003/MR2", r"holds 3 DICOM series; choose one with series_uid"),
        ("98892003/MR700", r"mixes 7 slice orientations"),
        ("77654033", r"holds no files, only sub-folders \(CR1, CR2, CR3, CT2\)"),
    ],
)
def test_broken_real_dicom_folders_are_explained(relative, message):
    with pytest.raises(InputError, match=message) as info:
        load_volume(PYDICOM_SERIES / relative)
    assert info.value.path.endswith(relative)


def test_series_uid_picks_one_of_several(tmp_path):
    folder = PYDICOM_SERIES / "98892003" / "MR2"
    uid = "1.3.6.1.4.1.5962.1.1.0.0.0.1196533885.18148.0.481"
    assert tuple(load_volume(folder, series_uid=uid).shape) == (16, 16, 1)
    with pytest.raises(InputError, match=r"has no series 1\.2\.3"):
        load_volume(folder, series_uid="1.2.3")


def test_gap_in_a_written_series_is_found(tmp_path):
    write_dicom_series(np.zeros((6, 8, 8)), tmp_path / "gap", skip_slices=(3,))
    with pytest.raises(InputError, match=r"gap or uneven spacing: 5 mm between slice_002.dcm and slice_004.dcm"):
        load_volume(tmp_path / "gap")


def test_empty_and_non_dicom_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="is an empty folder"):
        load_volume(tmp_path / "empty")
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="contains no DICOM image files"):
        load_volume(tmp_path / "text")


def test_missing_empty_truncated_and_non_image_files(tmp_path):
    with pytest.raises(InputError, match=r"nothing\.nii\.gz: file not found"):
        load_volume(tmp_path / "nothing.nii.gz")
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    with pytest.raises(InputError, match=r"empty\.nii\.gz: is an empty file"):
        load_volume(tmp_path / "empty.nii.gz")
    good = save_nifti(np.ones((20, 20, 20), np.float32), np.eye(4), tmp_path / "good.nii")
    (tmp_path / "truncated.nii").write_bytes(good.read_bytes()[:2000])
    with pytest.raises(InputError, match=r"truncated\.nii: cannot be read as an image"):
        load_volume(tmp_path / "truncated.nii")
    (tmp_path / "text.nii.gz").write_bytes(gzip.compress(b"this is not an image"))
    with pytest.raises(InputError, match=r"text\.nii\.gz: cannot be read as an image"):
        load_volume(tmp_path / "text.nii.gz")


def test_gzipped_nifti_cut_short_is_explained(tmp_path):
    """The streamed .nii.gz reader refuses a file whose voxel data ends early, naming it."""
    noise = np.random.default_rng(5).normal(size=(40, 30, 20)).astype(np.float32)  # does not compress
    raw = save_nifti(noise, np.eye(4), tmp_path / "good.nii").read_bytes()
    (tmp_path / "short.nii.gz").write_bytes(gzip.compress(raw[: len(raw) // 2]))  # a complete gzip, too little data
    (tmp_path / "cut.nii.gz").write_bytes(gzip.compress(raw)[:5000])  # a gzip stream cut off
    for name in ("short", "cut"):
        with pytest.raises(InputError, match=rf"{name}\.nii\.gz: cannot be read as an image"):
            load_volume(tmp_path / f"{name}.nii.gz")


def test_nibabel_still_reads_what_we_consider_good(tmp_path):
    path = save_nifti(np.zeros((4, 4, 4), np.int16), np.eye(4), tmp_path / "z.nii.gz")
    assert nib.load(str(path)).shape == (4, 4, 4)
