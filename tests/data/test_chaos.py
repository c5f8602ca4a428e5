"""CHAOS ground-truth conversion on a synthetic patient: PNG slices -> NIfTI in the DICOM series' geometry."""

import numpy as np
import SimpleITK as sitk

from medattn3d.data.chaos import convert_ground_truth
from medattn3d.data.loading import load_volume
from tests.helpers import write_dicom_series


def test_png_ground_truth_lands_on_the_dicom_slices(tmp_path):
    depth, rows, cols = 5, 12, 10
    write_dicom_series(np.zeros((depth, rows, cols)), tmp_path / "DICOM_anon", direction=(1, 0, 0, 0, 0, -1, 0, 1, 0))
    ground = tmp_path / "Ground"
    ground.mkdir()
    grey_levels = (0, 63, 126, 189, 252)
    for k in range(depth):  # slice k: a block of class k (grey level) at row k
        png = np.zeros((rows, cols), np.uint8)
        png[k : k + 3, 2:6] = grey_levels[k]
        sitk.WriteImage(sitk.GetImageFromArray(png), str(ground / f"slice_{k:03d}.png"))
    out = convert_ground_truth(tmp_path / "DICOM_anon", ground, tmp_path / "labels" / "p_T2SPIR.nii.gz")
    label = load_volume(out)
    image = load_volume(tmp_path / "DICOM_anon")
    assert np.allclose(np.asarray(label.affine), np.asarray(image.affine), atol=1e-4)
    array = np.asarray(label)  # (cols, rows, slices) as MONAI reads ITK images
    for k in range(1, depth):
        assert set(np.unique(array[:, :, k])) == {0, k}
        assert array[3, k, k] == k and array[3, k + 3, k] == 0
