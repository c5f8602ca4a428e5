"""What the user points ``infer``/``explain`` at: the volumes behind a path, and header-only checks of each.

The header pass lets a batch run report every unreadable or ill-shaped input at once, before any compute, without
reading voxels (those are read once, when the case runs, and checked there by :class:`CheckVolumed`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from medattn3d.data.loading import VOLUME_SUFFIXES
from medattn3d.errors import InputError

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def _is_dicom_file(path: Path) -> bool:
    """True when ``path`` starts like a DICOM file (the 128-byte preamble and ``DICM``; 132 bytes read)."""
    try:
        with open(path, "rb") as stream:
            return stream.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def _holds_dicom(folder: Path) -> bool:
    """True when one of ``folder``'s files is a DICOM file (stops at the first one)."""
    return any(p.is_file() and _is_dicom_file(p) for p in sorted(folder.iterdir()))


def discover_inputs(path: str | Path) -> list[Path]:
    """The volumes behind ``path``: a file, a DICOM series folder, or a folder of volume files and series folders.

    Sorted and absolute, so every process of a split run sees the same list in the same order.
    """
    path = Path(path).absolute()
    if not path.exists():
        raise InputError(path, "file not found")
    if path.is_file() or _holds_dicom(path):
        return [path]
    entries = sorted(path.iterdir())
    volumes = [p for p in entries if p.is_file() and p.name.lower().endswith(VOLUME_SUFFIXES)]
    series = [p for p in entries if p.is_dir() and _holds_dicom(p)]
    if not volumes and not series:
        raise InputError(path, "holds no volumes (NIfTI, NRRD, MHA, DICOM files or DICOM series folders)")
    return volumes + series


def _header_shape(path: Path) -> tuple[int, ...]:
    """The voxel grid of a file from its header alone (nibabel for NIfTI, SimpleITK otherwise, pydicom for .dcm)."""
    name = path.name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        import nibabel as nib

        return tuple(int(s) for s in nib.load(str(path)).header.get_data_shape())
    if name.endswith(".dcm"):
        import pydicom

        header = pydicom.dcmread(path, stop_before_pixels=True)
        frames = int(header.get("NumberOfFrames", 1) or 1)
        return (int(header.Columns), int(header.Rows), *((frames,) if frames > 1 else ()))
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    components = reader.GetNumberOfComponents()
    return (*reader.GetSize(), *((components,) if components > 1 else ()))


def check_header(
    path: Path, channels: int = 1, formats: Sequence[str] = ("nifti",), series_uid: str | None = None, min_size: int = 4
) -> None:
    """Reject an input from its header alone (no voxel is read): unreadable, not 3D (or 4D with ``channels``
    channels), an axis under ``min_size`` voxels, an inconsistent DICOM series, DICOM SEG asked of a non-DICOM input
    or of a series it cannot reference.
    The voxel checks (non-finite values) run when the case is loaded."""
    if not path.exists():
        raise InputError(path, "file not found")
    dicom = path.is_dir() or path.name.lower().endswith(".dcm")
    if "dicom-seg" in formats and not dicom:
        raise InputError(path, "--format dicom-seg needs a DICOM input (a series folder); this is not DICOM")
    if path.is_dir():
        import pydicom

        from medattn3d.data.dicom import inspect_series, missing_seg_reference_tags

        series = inspect_series(path, series_uid)
        shape: tuple[int, ...] = (*_header_shape(series.files[0])[:2], len(series.files))
        if "dicom-seg" in formats:  # refused before compute, not after the other formats are written
            missing = missing_seg_reference_tags(pydicom.dcmread(series.files[0], stop_before_pixels=True))
            if missing:
                raise InputError(
                    path, f"cannot reference this series in a DICOM SEG: its slices lack {', '.join(missing)}"
                )
    else:
        if path.stat().st_size == 0:
            raise InputError(path, "is an empty file")
        try:
            shape = _header_shape(path)
        except Exception as err:  # readers raise many types; the user needs the file and the reason
            reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
            raise InputError(path, f"cannot be read as an image ({reason[:300]})") from err
    if len(shape) < 3 or len(shape) > 4 or (len(shape) == 4 and shape[3] != channels):
        raise InputError(
            path, f"is {len(shape)}D (shape {shape}) where a 3D volume with {channels} channel(s) is expected"
        )
    if len(shape) == 3 and channels != 1:
        raise InputError(path, f"has 1 channel (shape {shape}) where {channels} are expected")
    small = [i for i, s in enumerate(shape[:3]) if s < min_size]
    if small:
        raise InputError(path, f"is too small: shape {shape[:3]} has axis {small[0]} below the minimum of {min_size}")
