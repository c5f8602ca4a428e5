"""Test helpers: write volumes and DICOM series with known geometry."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk


def save_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


def write_dicom_series(
    array_zyx: np.ndarray,
    folder: Path,
    spacing_xyz: tuple[float, float, float] = (0.8, 0.7, 2.5),
    origin_xyz: tuple[float, float, float] = (-50.0, -40.0, 20.0),
    direction: tuple[float, ...] = (1, 0, 0, 0, 1, 0, 0, 0, 1),
    skip_slices: tuple[int, ...] = (),
    series_uid: str = "1.2.826.0.1.3680043.2.1125.1.42",
) -> sitk.Image:
    """Write ``array_zyx`` (int16) as one CT DICOM file per slice with SimpleITK; returns the full SimpleITK volume.

    ``skip_slices`` leaves those slices out (a gapped series).
    """
    folder.mkdir(parents=True, exist_ok=True)
    volume = sitk.GetImageFromArray(array_zyx.astype(np.int16))
    volume.SetSpacing(spacing_xyz)
    volume.SetOrigin(origin_xyz)
    volume.SetDirection(direction)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    d = direction
    for k in range(volume.GetDepth()):
        if k in skip_slices:
            continue
        slice_image = volume[:, :, k]
        position = volume.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {
            "0008|0060": "CT",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1.1",
            "0020|000e": series_uid,
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.6f}" for v in position),
            "0020|0037": "\\".join(f"{v:.6f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7])),
            "0018|0050": str(spacing_xyz[2]),
            "0008|0018": f"{series_uid}.{k + 1}",
            "0008|103e": "test series",
        }
        for tag, value in tags.items():
            slice_image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice_{k:03d}.dcm"))
        writer.Execute(slice_image)
    return volume


def oblique_affine(spacing=(0.8, 0.9, 2.5), angle=0.3, flip_x=False, origin=(10.0, -20.0, 30.0)) -> np.ndarray:
    """A voxel-to-RAS affine rotated by ``angle`` about z, optionally flipping the first axis."""
    c, s = np.cos(angle), np.sin(angle)
    rotation = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    scales = np.array(spacing, dtype=float) * np.array([-1 if flip_x else 1, 1, 1])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(scales)
    affine[:3, 3] = origin
    return affine


def blob_mask(shape: tuple[int, int, int]) -> np.ndarray:
    """Two box-shaped classes, big enough to survive resampling."""
    mask = np.zeros(shape, np.uint8)
    x, y, z = shape
    mask[x // 5 : x // 2, y // 5 : y // 2, z // 5 : z // 2 + 2] = 1
    mask[x // 2 + 2 : 4 * x // 5, y // 2 : 4 * y // 5, z // 3 : 4 * z // 5] = 2
    return mask
