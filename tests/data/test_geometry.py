"""Output in the input's geometry: preprocess, take a known mask as the prediction, invert, save: same voxels."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medattn3d.data.transforms import ct_transforms
from medattn3d.outputs.prediction import prediction_writer
from tests.helpers import blob_mask, oblique_affine, save_nifti, write_dicom_series

LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
AFFINES = {
    "ras": np.diag([1.0, 1.0, 1.0, 1.0]),
    "lps": LPS @ np.diag([0.9, 0.9, 1.5, 1.0]),
    "anisotropic": np.diag([0.6, 0.7, 5.0, 1.0]),
    "flipped": oblique_affine(angle=0.0, flip_x=True),
    "oblique": oblique_affine(angle=0.4),
}


def _round_trip(image_path: Path, mask_path: Path, out_dir: Path, pixdim) -> np.ndarray:
    """Preprocess image + mask as for validation, use the mask as a perfect prediction, invert and write it."""
    infer = ct_transforms("infer", pixdim=pixdim)
    data = infer({"image": str(image_path)})
    label = ct_transforms("val", pixdim=pixdim)({"image": str(image_path), "label": str(mask_path)})["label"]
    assert label.shape[1:] == data["image"].shape[1:]
    data["pred"] = torch.cat([(label == k).float() for k in range(3)]) * 10.0
    prediction_writer(infer, out_dir)(data)
    written = sorted(out_dir.glob("*_seg.nii.gz"))
    assert len(written) == 1
    return written[0]


def _dice(a: np.ndarray, b: np.ndarray, k: int) -> float:
    return 2 * np.sum((a == k) & (b == k)) / (np.sum(a == k) + np.sum(b == k))


@pytest.mark.parametrize("name", sorted(AFFINES))
@pytest.mark.parametrize("pixdim", [None, (1.5, 1.5, 2.0)])
def test_nifti_prediction_lands_on_the_input_voxels(tmp_path, name, pixdim):
    shape = (40, 36, 20)
    affine = AFFINES[name]
    mask = blob_mask(shape)
    image = save_nifti(np.random.default_rng(0).normal(0, 50, shape).astype(np.float32), affine, tmp_path / "ct.nii.gz")
    mask_path = save_nifti(mask, affine, tmp_path / "mask.nii.gz")
    out = nib.load(str(_round_trip(image, mask_path, tmp_path / "out", pixdim)))
    assert out.shape == shape
    assert np.allclose(out.affine, affine, atol=1e-4)
    assert out.get_data_dtype() == np.uint8
    predicted = np.asarray(out.dataobj)
    if pixdim is None:  # reorientation only: exact
        assert np.array_equal(predicted, mask)
    else:  # resampled to a coarser grid and back: same structures, centroids within one target voxel
        for k in (1, 2):
            assert _dice(predicted, mask, k) > 0.8
            shift_voxels = np.argwhere(predicted == k).mean(0) - np.argwhere(mask == k).mean(0)
            shift_mm = float(np.linalg.norm(affine[:3, :3] @ shift_voxels))
            assert shift_mm < min(pixdim), f"class {k} moved by {shift_mm:.2f} mm"


def test_dicom_series_prediction_is_written_as_nifti_in_the_series_geometry(tmp_path):
    shape_zyx = (12, 30, 34)
    mask_zyx = blob_mask(shape_zyx[::-1]).transpose(2, 1, 0)
    rng = np.random.default_rng(1)
    volume = write_dicom_series(
        rng.integers(-200, 200, shape_zyx),
        tmp_path / "series",
        spacing_xyz=(0.8, 0.7, 2.5),
        direction=(0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    )
    # the reference mask as NIfTI in the series' geometry (ITK's LPS -> RAS)
    affine = np.eye(4)
    affine[:3, :3] = np.array(volume.GetDirection()).reshape(3, 3) @ np.diag(volume.GetSpacing())
    affine[:3, 3] = volume.GetOrigin()
    affine = LPS @ affine
    mask = mask_zyx.transpose(2, 1, 0)
    mask_path = save_nifti(mask, affine, tmp_path / "mask.nii.gz")
    written = _round_trip(tmp_path / "series", mask_path, tmp_path / "out", None)
    assert written.name == "series_seg.nii.gz"
    out = nib.load(str(written))
    assert out.shape == mask.shape
    assert np.allclose(out.affine, affine, atol=1e-4)
    assert np.array_equal(np.asarray(out.dataobj), mask)


def test_channel_argmax_equals_torch_argmax_and_keeps_meta():
    from monai.data import MetaTensor

    from medattn3d.outputs.prediction import ChannelArgmaxd

    scores = torch.rand(5, 7, 6, 4)
    scores[:, 0, 0, 0] = 0.5  # a tie: the lower class wins, as with argmax
    meta_scores = MetaTensor(scores, affine=torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0])))
    out = ChannelArgmaxd("pred")({"pred": meta_scores})["pred"]
    assert out.shape == (1, 7, 6, 4) and out.dtype == torch.uint8
    assert torch.equal(out.as_tensor()[0].long(), torch.argmax(scores, dim=0))
    assert torch.equal(out.affine, meta_scores.affine)
