"""The two places that reach into MONAI internals fail loudly here when a MONAI upgrade moves them.

``RowMajorNibabelReader`` overrides ``NibabelReader._get_array_data``; ``FastInverseSpacingd`` swaps the
``sp_resample`` attribute of ``Spacing``. If MONAI renames either, our subclass would silently fall back to MONAI's
slow path (or break at run time): these tests name the internal that moved.
"""

import inspect

import numpy as np
from monai.data import NibabelReader
from monai.transforms import Spacing, SpatialResample

from medattn3d.data.loading import RowMajorNibabelReader
from medattn3d.data.resample import FastInverseSpacingd


def test_nibabel_reader_still_has_the_array_hook_we_override():
    hook = getattr(NibabelReader, "_get_array_data", None)
    assert hook is not None, "monai.data.NibabelReader._get_array_data is gone: update RowMajorNibabelReader"
    assert list(inspect.signature(hook).parameters) == ["self", "img", "filename"], (
        "NibabelReader._get_array_data changed its signature: update RowMajorNibabelReader"
    )
    assert RowMajorNibabelReader._get_array_data is not NibabelReader._get_array_data


def test_row_major_reader_is_the_hook_monai_calls(tmp_path):
    import nibabel as nib

    path = tmp_path / "volume.nii.gz"
    volume = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), str(path))
    calls = []

    class Spy(RowMajorNibabelReader):
        def _get_array_data(self, img, filename):
            calls.append(filename)
            return super()._get_array_data(img, filename)

    reader = Spy()
    array, _ = reader.get_data(reader.read(str(path)))
    assert calls, "MONAI no longer calls _get_array_data when reading: RowMajorNibabelReader is bypassed"
    assert np.array_equal(array, volume) and array.flags.c_contiguous


def test_spacing_still_resamples_through_sp_resample():
    spacing = Spacing(pixdim=(2.0, 2.0, 2.0))
    assert isinstance(getattr(spacing, "sp_resample", None), SpatialResample), (
        "monai.transforms.Spacing.sp_resample is gone: update FastInverseSpacingd"
    )
    fast = FastInverseSpacingd("image", pixdim=(2.0, 2.0, 2.0))
    assert type(fast.spacing_transform.sp_resample).__name__ == "SeparableSpatialResample"
    assert isinstance(fast.spacing_transform.sp_resample, SpatialResample)
