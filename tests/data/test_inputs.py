"""Header-only input checks: a DICOM SEG request is refused before compute when the series cannot be referenced."""

import numpy as np
import pydicom
import pytest

from medattn3d.data.inputs import check_header
from medattn3d.errors import InputError
from tests.helpers import write_dicom_series


def test_dicom_seg_needs_a_frame_of_reference(tmp_path):
    folder = tmp_path / "series"
    write_dicom_series(np.zeros((6, 8, 8), np.int16), folder)
    check_header(folder, formats=("nifti",))  # NIfTI output needs no reference
    if "FrameOfReferenceUID" in pydicom.dcmread(sorted(folder.iterdir())[0], stop_before_pixels=True):
        pytest.skip("the helper's series carries a frame of reference")
    with pytest.raises(InputError, match="cannot reference this series in a DICOM SEG: its slices lack FrameOf"):
        check_header(folder, formats=("nifti", "dicom-seg"))
