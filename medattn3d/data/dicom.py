"""DICOM series discovery and consistency checks (pydicom headers only), before any pixel is read."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from medattn3d.errors import InputError

# what a DICOM SEG must copy from its source series to reference it and to place its frames (highdicom refuses a
# source without them; a missing SliceThickness is filled in from the slice spacing, see outputs/dicom_seg.py)
SEG_REFERENCE_TAGS = ("FrameOfReferenceUID", "StudyInstanceUID", "SOPClassUID", "PixelSpacing")


def missing_seg_reference_tags(header: pydicom.Dataset) -> list[str]:
    """The :data:`SEG_REFERENCE_TAGS` that ``header`` lacks (empty: a DICOM SEG can reference its series)."""
    return [tag for tag in SEG_REFERENCE_TAGS if tag not in header]


ORIENTATION_TOLERANCE = 1e-4
SPACING_RELATIVE_TOLERANCE = 0.05


@dataclass(frozen=True)
class DicomSeries:
    """One series in a folder: its UID, description, files sorted along the slice normal and slice positions."""

    uid: str
    description: str
    files: tuple[Path, ...]
    positions: tuple[float, ...]


def series_headers(folder: Path) -> dict[str, list[tuple[Path, pydicom.Dataset]]]:
    """Headers of the DICOM image files directly in ``folder``, grouped by SeriesInstanceUID."""
    groups: dict[str, list[tuple[Path, pydicom.Dataset]]] = defaultdict(list)
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, EOFError):
            continue  # DICOMDIR indexes, READMEs, thumbnails: not slices
        if "SeriesInstanceUID" in header and "Rows" in header:
            groups[str(header.SeriesInstanceUID)].append((path, header))
    return groups


def _describe(groups: dict[str, list[tuple[Path, pydicom.Dataset]]]) -> str:
    parts = []
    for uid, items in groups.items():
        description, modality = items[0][1].get("SeriesDescription", ""), items[0][1].get("Modality", "?")
        parts.append(f"{uid} ({len(items)} file(s), '{description}', {modality})")
    return "; ".join(parts)


def _sorted_series(folder: Path, uid: str, items: list[tuple[Path, pydicom.Dataset]]) -> DicomSeries:
    """Sort one series along its slice normal; reject mixed orientations, missing positions, gaps, duplicates."""
    orientations = [np.asarray(h.get("ImageOrientationPatient", [np.nan] * 6), dtype=float) for _, h in items]
    positions = [np.asarray(h.get("ImagePositionPatient", [np.nan] * 3), dtype=float) for _, h in items]
    if any(not np.all(np.isfinite(o)) for o in orientations) or any(not np.all(np.isfinite(p)) for p in positions):
        missing = next(
            p
            for (p, _), o, q in zip(items, orientations, positions, strict=True)
            if not (np.all(np.isfinite(o)) and np.all(np.isfinite(q)))
        )
        raise InputError(folder, f"series {uid}: {missing.name} has no ImageOrientationPatient/ImagePositionPatient")
    if any(np.abs(o - orientations[0]).max() > ORIENTATION_TOLERANCE for o in orientations):
        distinct = {tuple(np.round(o, 3)) for o in orientations}
        raise InputError(
            folder,
            f"series {uid} mixes {len(distinct)} slice orientations (e.g. a localizer); cannot stack its "
            "slices into one volume",
        )
    normal = np.cross(orientations[0][:3], orientations[0][3:])
    along = np.array([float(np.dot(p, normal)) for p in positions])
    order = np.argsort(along, kind="stable")
    along = along[order]
    files = tuple(items[i][0] for i in order)
    if len(along) > 1:
        steps = np.diff(along)
        if np.any(steps < 1e-3):
            i = int(np.argmin(steps))
            raise InputError(folder, f"series {uid}: {files[i].name} and {files[i + 1].name} lie at the same position")
        typical = float(np.median(steps))
        off = np.abs(steps - typical) > SPACING_RELATIVE_TOLERANCE * typical
        if np.any(off):
            i = int(np.argmax(off))
            raise InputError(
                folder,
                f"series {uid} has a gap or uneven spacing: {steps[i]:.3g} mm between {files[i].name} and "
                f"{files[i + 1].name} where the slices are {typical:.3g} mm apart (missing slices?)",
            )
    description = str(items[0][1].get("SeriesDescription", ""))
    return DicomSeries(uid, description, files, tuple(float(a) for a in along))


def inspect_series(folder: str | Path, series_uid: str | None = None) -> DicomSeries:
    """The one consistent DICOM series in ``folder`` (or the one named ``series_uid``); ``InputError`` otherwise."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "not a folder")
    groups = series_headers(folder)
    if not groups:
        entries = sorted(folder.iterdir())
        subfolders = [p.name for p in entries if p.is_dir()]
        if any(p.is_file() for p in entries):
            raise InputError(folder, "contains no DICOM image files")
        if subfolders:
            raise InputError(
                folder, f"holds no files, only sub-folders ({', '.join(subfolders[:5])}); give the folder of one series"
            )
        raise InputError(folder, "is an empty folder")
    if series_uid is not None:
        if series_uid not in groups:
            raise InputError(folder, f"has no series {series_uid}; it holds: {_describe(groups)}")
        return _sorted_series(folder, series_uid, groups[series_uid])
    if len(groups) > 1:
        raise InputError(
            folder, f"holds {len(groups)} DICOM series; choose one with series_uid (--series-uid): {_describe(groups)}"
        )
    uid, items = next(iter(groups.items()))
    return _sorted_series(folder, uid, items)
