"""Shared cases for the output tests: a small oblique CT and a DICOM series, preprocessed, with a known prediction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch

from medattn3d.data.transforms import ct_transforms
from tests.helpers import blob_mask, oblique_affine, save_nifti, write_dicom_series

CLASS_NAMES = {"0": "background", "1": "liver", "2": "Kidney_Left"}


def logits_from_mask(label: torch.Tensor, num_classes: int = 3, seed: int = 0) -> torch.Tensor:
    """Logits (C, ...) that favour ``label``'s class with some noise: a prediction we know the answer of."""
    noise = torch.from_numpy(np.random.default_rng(seed).normal(0, 0.5, (num_classes, *label.shape[1:])))
    return torch.cat([(label == k).float() for k in range(num_classes)]) * 4.0 + noise.float()


def prepared(image: Path, mask: Path, pixdim) -> tuple[dict, torch.Tensor, object]:
    """(preprocessed infer dict, logits in network space, the infer Compose) for ``image`` with ``mask`` as truth."""
    infer = ct_transforms("infer", pixdim=pixdim)
    data = infer({"image": str(image)})
    label = ct_transforms("val", pixdim=pixdim)({"image": str(image), "label": str(mask)})["label"]
    return data, logits_from_mask(label), infer


@pytest.fixture
def nifti_case(tmp_path):
    shape = (30, 26, 14)
    affine = oblique_affine(angle=0.3)
    image = save_nifti(np.random.default_rng(0).normal(0, 50, shape).astype(np.float32), affine, tmp_path / "ct.nii.gz")
    mask = save_nifti(blob_mask(shape), affine, tmp_path / "mask.nii.gz")
    return image, mask, affine, shape


@pytest.fixture
def dicom_case(tmp_path):
    shape_zyx = (10, 24, 28)
    volume = write_dicom_series(
        np.random.default_rng(1).integers(-200, 200, shape_zyx),
        tmp_path / "series",
        spacing_xyz=(0.8, 0.7, 2.5),
        direction=(0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    )
    for path in sorted((tmp_path / "series").iterdir()):  # what every scanner writes and a SEG needs
        header = pydicom.dcmread(path)
        header.FrameOfReferenceUID = "1.2.826.0.1.3680043.2.1125.1.43"
        header.PatientID, header.PatientName, header.AccessionNumber = "P1", "Test^Patient", "A1"
        header.save_as(path)
    lps_to_ras = np.diag([-1.0, -1.0, 1.0, 1.0])
    affine = np.eye(4)
    affine[:3, :3] = np.array(volume.GetDirection()).reshape(3, 3) @ np.diag(volume.GetSpacing())
    affine[:3, 3] = volume.GetOrigin()
    mask = save_nifti(blob_mask(shape_zyx[::-1]), lps_to_ras @ affine, tmp_path / "mask.nii.gz")
    return tmp_path / "series", mask
