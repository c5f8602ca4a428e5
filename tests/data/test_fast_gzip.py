"""ISA-L gzip for NIfTI: same voxels both ways, standard gzip on disk, in use once medattn3d.data is imported."""

import gzip

import nibabel as nib
import numpy as np
import pytest
from nibabel.openers import ImageOpener

import medattn3d.data  # noqa: F401  (enables the fast opener)
from medattn3d.data.fast_gzip import _isal_gzip_open, enable_fast_gzip


def test_nibabel_uses_isal_after_import():
    pytest.importorskip("isal")
    assert enable_fast_gzip()
    assert ImageOpener.compress_ext_map[".gz"][0] is _isal_gzip_open


def test_round_trip_and_interoperability_with_plain_gzip(tmp_path):
    pytest.importorskip("isal")
    volume = np.random.default_rng(0).integers(-1000, 2000, (40, 30, 20)).astype(np.int16)
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(volume, affine), str(path))
    with gzip.open(path) as stream:  # Python's own gzip reads what ISA-L wrote
        header = nib.Nifti1Header.from_fileobj(stream)
    assert tuple(header.get_data_shape()) == volume.shape
    loaded = nib.load(str(path))
    assert np.array_equal(np.asarray(loaded.dataobj), volume)
    assert np.allclose(loaded.affine, affine)
    plain = tmp_path / "plain.nii"  # and an uncompressed file still opens with the default opener
    nib.save(nib.Nifti1Image(volume, affine), str(plain))
    assert np.array_equal(np.asarray(nib.load(str(plain)).dataobj), volume)
