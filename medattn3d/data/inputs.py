"""What the user points ``infer``/``explain`` at: the volumes behind a path, and header-only checks of each.

The header pass lets a batch run report every unreadable or ill-shaped input at once, before any compute, without
reading voxels (those are read once, when the case runs, and checked there by :class:`CheckVolumed`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from medattn3d.data.loading import TWO_D_IMAGE_HINT, VOLUME_SUFFIXES, too_small
from medattn3d.errors import InputError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
# nnU-Net's naming of one file per channel: <case>_0000.nii.gz, <case>_0001.nii.gz, ...
_SUFFIX_PATTERN = "|".join(map(re.escape, VOLUME_SUFFIXES))
CHANNEL_FILE = re.compile(rf"^(?P<case>.+)_(?P<channel>\d{{4}})(?P<suffix>{_SUFFIX_PATTERN})$", re.IGNORECASE)


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


def group_channel_files(paths: Sequence[Path], channels: int) -> tuple[list[Path], dict[Path, list[Path]]]:
    """Cases stored one file per channel in nnU-Net's naming (``case_0000.nii.gz``, ``case_0001.nii.gz``, ...), for a
    bundle with ``channels`` > 1 input channels: returns the inputs with each such case once, by its first channel
    file, and for each of those keys its channel files in channel order (all ``<case>_NNNN`` files beside it, whether
    or not they were among ``paths``). A file without siblings, or any input for a one-channel bundle, stays as it
    is (a 4D file holds its channels itself). :func:`check_case` refuses an incomplete set."""
    if channels <= 1:
        return list(paths), {}
    inputs: list[Path] = []
    groups: dict[Path, list[Path]] = {}
    grouped: set[Path] = set()
    cases: dict[tuple[Path, str, str], list[Path]] = {}  # (folder, case, suffix) -> channel files, each folder once
    listed: set[Path] = set()
    for path in paths:
        match = CHANNEL_FILE.match(path.name) if path not in grouped and path.is_file() else None
        if match is None:
            if path not in grouped:
                inputs.append(path)
            continue
        if path.parent not in listed:
            listed.add(path.parent)
            for sibling in path.parent.iterdir():
                found = CHANNEL_FILE.match(sibling.name)
                if found and sibling.is_file():
                    cases.setdefault((path.parent, found["case"], found["suffix"]), []).append(sibling)
        siblings = sorted(
            cases[(path.parent, match["case"], match["suffix"])],
            key=lambda p: int(CHANNEL_FILE.match(p.name)["channel"]),
        )
        if len(siblings) < 2:
            inputs.append(path)
            continue
        inputs.append(siblings[0])
        groups[siblings[0]] = siblings
        grouped.update(siblings)
    return inputs, groups


def check_case(
    files: Sequence[Path],
    channels: int,
    formats: Sequence[str] = ("nifti",),
    series_uid: str | None = None,
    min_size: int | Sequence[int] = 4,
) -> None:
    """:func:`check_header` for one case: a single input, or one file per channel (``files`` from
    :func:`group_channel_files`), which must be ``_0000`` up to the bundle's channel count, each one 3D volume of
    the first's shape (the grids are compared when the voxels are read)."""
    if len(files) == 1:
        match = CHANNEL_FILE.match(files[0].name) if channels > 1 and files[0].is_file() else None
        if match is not None and _rank(files[0]) == 3:  # one channel file of a split case, alone
            wanted = ", ".join(f"{match['case']}_{i:04d}{match['suffix']}" for i in range(channels))
            raise InputError(
                files[0],
                f"is one channel file of case '{match['case']}' and no sibling lies beside it: the bundle needs "
                f"{channels} channel files ({wanted}) or one 4D file",
            )
        check_header(files[0], channels, formats, series_uid, min_size)
        return
    numbers = [CHANNEL_FILE.match(f.name)["channel"] for f in files]
    wanted = [f"{i:04d}" for i in range(channels)]
    if numbers != wanted:
        raise InputError(
            files[0],
            f"has channel files _{', _'.join(numbers)} where the bundle needs {channels}: "
            f"_{wanted[0]} to _{wanted[-1]}",
        )
    if "dicom-seg" in formats:
        raise InputError(files[0], "--format dicom-seg needs a DICOM input (a series folder); this is not DICOM")
    first = _checked_shape(files[0], min_size)
    for path in files[1:]:
        shape = _checked_shape(path, min_size)
        if shape != first:
            raise InputError(path, f"channel shape {shape} differs from the first channel's {first} ({files[0]})")


def _rank(path: Path) -> int | None:
    """The number of axes in ``path``'s header, or ``None`` when it cannot be read (``check_header`` says why)."""
    try:
        return len(_header_shape(path))
    except Exception:  # any reader error: check_header reports it with the file named
        return None


def _checked_shape(path: Path, min_size: int | Sequence[int] = 4) -> tuple[int, ...]:
    """A channel file's shape after :func:`check_header` accepted it as one 3D volume."""
    check_header(path, 1, min_size=min_size)
    return _header_shape(path)[:3]


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
    path: Path,
    channels: int = 1,
    formats: Sequence[str] = ("nifti",),
    series_uid: str | None = None,
    min_size: int | Sequence[int] = 4,
) -> None:
    """Reject an input from its header alone (no voxel is read): unreadable, not 3D (or 4D with ``channels``
    channels), an axis under ``min_size`` voxels (one size, or one per axis: ``loading.minimum_shape``), an
    inconsistent DICOM series, DICOM SEG asked of a non-DICOM input or of a series it cannot reference.
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
        hint = TWO_D_IMAGE_HINT if len(shape) == 2 else ""
        raise InputError(
            path, f"is {len(shape)}D (shape {shape}) where a 3D volume with {channels} channel(s) is expected{hint}"
        )
    if len(shape) == 3 and channels != 1:
        raise InputError(path, f"has 1 channel (shape {shape}) where {channels} are expected")
    problem = too_small(shape, min_size)
    if problem:
        raise InputError(path, problem)
