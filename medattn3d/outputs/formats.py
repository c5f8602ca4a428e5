"""Writers for one restored prediction (label map and probabilities in the input's geometry): NIfTI label map,
3D Slicer segmentation (``.seg.nrrd``) and NIfTI probabilities. Each writes through :func:`atomic_path`.

Geometry comes in as MONAI keeps it: a voxel-to-RAS affine for an ``(X, Y, Z)`` array. NIfTI stores exactly that;
ITK/NRRD files are written in LPS with the array in ITK's ``(Z, Y, X)`` memory order.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
import torch

from medattn3d.data.blocks import copy_blocked
from medattn3d.outputs.atomic import atomic_path
from medattn3d.outputs.tables import LabelEntry

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
PROBABILITY_LEVELS = 255  # probabilities are stored as k / 255 in uint8 (NIfTI has no float16)


def spacing_of(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size (mm) along each array axis: the lengths of the affine's columns."""
    return tuple(float(s) for s in np.linalg.norm(np.asarray(affine)[:3, :3], axis=0))


def lps_affine(affine_ras: np.ndarray) -> np.ndarray:
    """The same voxel-to-world map in DICOM/ITK patient coordinates (LPS)."""
    return RAS_TO_LPS @ np.asarray(affine_ras, dtype=np.float64)


def _nifti(array: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    image = nib.Nifti1Image(array, affine)
    image.header.set_qform(affine, code=1)
    image.header.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm")
    return image


def write_nifti_labels(path: Path, labels: np.ndarray, affine: np.ndarray) -> Path:
    """``labels`` (X, Y, Z; uint8, or uint16 for label values past 255) as a gzipped NIfTI label map with ``affine``
    (voxel -> RAS)."""
    dtype = np.uint16 if np.asarray(labels).dtype == np.uint16 else np.uint8
    with atomic_path(path) as tmp:
        image = _nifti(fortran_order(np.asarray(labels, dtype=dtype)), np.asarray(affine, dtype=np.float64))
        nib.save(image, str(tmp))
    return path


def fortran_order(array: np.ndarray) -> np.ndarray:
    """``array`` with the same values in column-major memory order, NIfTI's on-disk order: nibabel then writes each
    slab with a plain copy instead of transposing it slab by slab (single-threaded numpy). The reordering runs in
    tiles on a thread pool (:func:`medattn3d.data.blocks.copy_blocked`; 3x faster than ``np.asfortranarray`` on a
    512 x 512 x 128 label map). Unchanged when already column-major."""
    if array.flags.f_contiguous or array.ndim < 2:
        return array
    try:
        source = torch.from_numpy(array)
    except (TypeError, ValueError):  # dtypes torch cannot hold
        return np.asfortranarray(array)
    target = np.empty(array.shape, dtype=array.dtype, order="F")
    copy_blocked(torch.from_numpy(target), source)
    return target


def quantise_probabilities(probabilities: torch.Tensor) -> torch.Tensor:
    """``(C, ...)`` probabilities -> uint8 ``k / 255`` steps that sum to exactly 255 per voxel (largest-remainder
    rounding), so the stored values lie in [0, 1], sum to 1 and keep the per-voxel order of the classes."""
    scaled = probabilities.float().clamp(0, 1) * PROBABILITY_LEVELS
    scaled = scaled * (PROBABILITY_LEVELS / scaled.sum(0, keepdim=True).clamp_min(1e-12))
    floor = scaled.floor()
    missing = (PROBABILITY_LEVELS - floor.sum(0)).round().long()  # 0 .. C-1 units left to hand out per voxel
    remainder = scaled - floor
    # rank of each class's remainder within its voxel (0 = largest); the `missing` largest get one more unit
    order = remainder.argsort(dim=0, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(0, order, torch.arange(order.shape[0]).view(-1, *[1] * (order.dim() - 1)).expand_as(order))
    return (floor + (rank < missing.unsqueeze(0)).float()).to(torch.uint8)


def write_probabilities(path: Path, probabilities: torch.Tensor, affine: np.ndarray) -> Path:
    """``(C, X, Y, Z)`` probabilities as a 4D NIfTI ``(X, Y, Z, C)``: uint8 steps of 1/255 with scl_slope 1/255,
    so any NIfTI reader returns values in [0, 1] that sum to 1 per voxel."""
    quantised = quantise_probabilities(probabilities)
    array = np.ascontiguousarray(quantised.permute(1, 2, 3, 0).numpy())
    image = _nifti(array, np.asarray(affine, dtype=np.float64))
    image.header.set_slope_inter(1.0 / PROBABILITY_LEVELS, 0.0)
    image.header["intent_code"] = 0
    image.header["descrip"] = b"class probabilities, axis 4 = class"
    with atomic_path(path) as tmp:
        nib.save(image, str(tmp))
    return path


def _itk_image(labels: np.ndarray, affine_ras: np.ndarray) -> sitk.Image:
    """A SimpleITK image of ``labels`` (X, Y, Z) with the geometry of ``affine_ras``."""
    affine = lps_affine(affine_ras)
    spacing = spacing_of(affine)
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(labels, dtype=np.uint8).transpose(2, 1, 0)))
    image.SetSpacing(spacing)
    image.SetOrigin(tuple(float(v) for v in affine[:3, 3]))
    image.SetDirection(tuple(float(v) for v in (affine[:3, :3] / np.asarray(spacing)).ravel()))
    return image


EMPTY_EXTENT = (0, -1, 0, -1, 0, -1)  # VTK's empty extent: Slicer's for a segment without voxels


def _span(present: torch.Tensor) -> tuple[int, int]:
    where = torch.nonzero(present).flatten()
    return int(where[0]), int(where[-1])


def _box(mask: torch.Tensor) -> tuple[int, ...] | None:
    """Inclusive voxel bounding box ``(i0, i1, j0, j1, k0, k1)`` of a 3D boolean mask, None when it is empty."""
    in_plane = mask.any(dim=2)
    if not bool(in_plane.any()):
        return None
    (i0, i1), (j0, j1) = _span(in_plane.any(dim=1)), _span(in_plane.any(dim=0))
    k0, k1 = _span(mask.reshape(-1, mask.shape[2]).any(dim=0))
    return i0, i1, j0, j1, k0, k1


def segment_extents(labels: torch.Tensor, values: list[int]) -> dict[int, tuple[int, ...]]:
    """Per label value, the inclusive voxel bounding box ``(i0, i1, j0, j1, k0, k1)`` of ``labels`` (X, Y, Z);
    :data:`EMPTY_EXTENT` for a label that does not occur. Labels are searched inside the foreground's box only."""
    box = _box(labels != 0)
    if box is None:
        return dict.fromkeys(values, EMPTY_EXTENT)
    i0, _, j0, _, k0, _ = box
    crop = labels[box[0] : box[1] + 1, box[2] : box[3] + 1, box[4] : box[5] + 1].contiguous()
    extents = {}
    for value in values:
        inner = _box(crop == value)
        extents[value] = (
            EMPTY_EXTENT
            if inner is None
            else (inner[0] + i0, inner[1] + i0, inner[2] + j0, inner[3] + j0, inner[4] + k0, inner[5] + k0)
        )
    return extents


def write_seg_nrrd(path: Path, labels: np.ndarray, affine_ras: np.ndarray, entries: list[LabelEntry]) -> Path:
    """A 3D Slicer segmentation: one gzipped 3D NRRD layer holding every class as a segment (its label value),
    with the ``Segmentation_*`` and ``SegmentN_*`` header fields of Slicer's ``.seg.nrrd`` format (names, colours,
    extents, terminology), so Slicer opens it as a segmentation with named, coloured segments."""
    image = _itk_image(labels, affine_ras)
    classes = [e for e in entries if e.value != 0]
    extents = segment_extents(torch.from_numpy(np.asarray(labels)), [e.value for e in classes if e.voxels])
    fields = {
        "Segmentation_MasterRepresentation": "Binary labelmap",
        "Segmentation_SourceRepresentation": "Binary labelmap",
        "Segmentation_ContainedRepresentationNames": "Binary labelmap|",
        "Segmentation_ReferenceImageExtentOffset": "0 0 0",
    }
    for index, entry in enumerate(classes):
        red, green, blue = (c / 255 for c in entry.colour)
        fields |= {
            f"Segment{index}_ID": f"Segment_{entry.value}",
            f"Segment{index}_Name": entry.name,
            f"Segment{index}_NameAutoGenerated": "0",
            f"Segment{index}_Color": f"{red:.6g} {green:.6g} {blue:.6g}",
            f"Segment{index}_ColorAutoGenerated": "0",
            f"Segment{index}_LabelValue": str(entry.value),
            f"Segment{index}_Layer": "0",
            f"Segment{index}_Extent": " ".join(str(v) for v in extents.get(entry.value, EMPTY_EXTENT)),
            f"Segment{index}_Tags": f"TerminologyEntry:{entry.term.slicer_terminology_entry()}|",
        }
    for key, value in fields.items():
        image.SetMetaData(key, value)
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), True)
    return path
