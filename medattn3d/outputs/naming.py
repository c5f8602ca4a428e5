"""Output file names: one distinct, deterministic name per input, and the files a finished case leaves behind.

Two inputs must never write the same output: ``case.nii.gz`` and ``case.nrrd`` in one folder get ``case_nii_gz`` and
``case_nrrd``; the plain stem (``case``) is kept whenever nothing else in the run shares it. A DICOM series folder is
named after the folder.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

# Image suffixes stripped from an input's name (longest first: ".seg.nrrd" before ".nrrd", ".nii.gz" before ".gz").
IMAGE_SUFFIXES = (
    ".seg.nrrd",
    ".nii.gz",
    ".nii",
    ".nrrd",
    ".nhdr",
    ".mha",
    ".mhd",
    ".dcm",
    ".dicom",
    ".img.gz",
    ".img",
    ".hdr",
    ".nia",
    ".gz",
)

FORMATS = ("nifti", "nrrd", "dicom-seg")
FORMAT_SUFFIXES = {"nifti": ".nii.gz", "nrrd": ".seg.nrrd", "dicom-seg": ".dcm"}
SIDECAR_SUFFIX = ".json"
SLICER_TABLE_SUFFIX = ".ctbl"
ITKSNAP_TABLE_SUFFIX = ".itksnap.txt"
PROBABILITIES_POSTFIX = "probabilities"


def split_name(path: str | Path) -> tuple[str, str]:
    """``(stem, suffix)`` of an input: ``case.nii.gz`` -> ``("case", ".nii.gz")``; a folder -> ``(name, "")``."""
    path = Path(path)
    name = path.name
    if path.is_dir():
        return name, ""
    lower = name.lower()
    for suffix in IMAGE_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], name[-len(suffix) :]
    return (path.stem, path.suffix) if path.stem else (name, "")


def _short_hash(path: Path) -> str:
    return hashlib.sha1(str(path).encode()).hexdigest()[:8]


def output_names(all_inputs: Iterable[str | Path]) -> dict[Path, str]:
    """A distinct output name for every input (keys: the absolute input paths), decided together.

    Inputs that share a stem (case-insensitively: macOS and Windows folders ignore case) get their suffix appended
    (``case_nii_gz``, ``case_nrrd``, ``case_dicom`` for a folder); if that still clashes (``a/case.nii.gz`` and
    ``b/case.nii.gz``), their parent folder's name is prepended; a last resort appends a hash of the full path.
    """
    paths = list(dict.fromkeys(Path(p).absolute() for p in all_inputs))
    names = {path: split_name(path)[0] for path in paths}

    def clashing(current: dict[Path, str]) -> set[Path]:
        groups: dict[str, list[Path]] = defaultdict(list)
        for path, name in current.items():
            groups[name.casefold()].append(path)
        return {path for group in groups.values() if len(group) > 1 for path in group}

    steps = (
        lambda path, name: f"{name}_{split_name(path)[1].lstrip('.').replace('.', '_').lower() or 'dicom'}",
        lambda path, name: f"{path.parent.name}_{name}" if path.parent.name else name,
        lambda path, name: f"{name}_{_short_hash(path)}",
    )
    for step in steps:
        clash = clashing(names)
        if not clash:
            break
        names.update({path: step(path, names[path]) for path in clash})
    return names


_CHANNEL_NUMBER = re.compile(r"_\d{4}$")


def case_output_names(cases: Iterable[str | Path | Sequence[str | Path]]) -> dict[Path, str]:
    """:func:`output_names` for cases that may be given one file per channel (keys: each case's first file,
    absolute). Such a case is named after the case, as nnU-Net names it: ``case_0000.nii.gz`` with its sibling
    ``case_0001.nii.gz`` -> ``case``; a single file keeps its own name."""
    stand_ins: dict[Path, Path] = {}
    for case in cases:
        files = [case] if isinstance(case, (str, Path)) else list(case)
        first = Path(files[0]).absolute()
        stem, suffix = split_name(first)
        if len(files) > 1 and _CHANNEL_NUMBER.search(stem):
            stand_ins[first] = first.with_name(_CHANNEL_NUMBER.sub("", stem) + suffix)
        else:
            stand_ins[first] = first
    names = output_names(stand_ins.values())
    return {first: names[stand_in] for first, stand_in in stand_ins.items()}


def output_name(input_path: str | Path, all_inputs: Sequence[str | Path]) -> str:
    """The output name (no folder, no suffix) of ``input_path`` in a run over ``all_inputs``: its stem when no
    other input shares it, a longer distinct name otherwise (see :func:`output_names`). Deterministic."""
    names = output_names([*all_inputs, input_path])
    return names[Path(input_path).absolute()]


def check_formats(formats: Iterable[str]) -> tuple[str, ...]:
    """The requested formats, validated and de-duplicated in order; ``ValueError`` naming the unknown one."""
    result = tuple(dict.fromkeys(str(f).lower() for f in formats))
    unknown = [f for f in result if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown output format {unknown[0]!r}; choose from {', '.join(FORMATS)}")
    if not result:
        raise ValueError(f"no output format requested; choose from {', '.join(FORMATS)}")
    return result


def expected_outputs(
    output_dir: str | Path,
    name: str,
    formats: Iterable[str] = ("nifti",),
    save_probabilities: bool = False,
    output_postfix: str = "seg",
) -> list[Path]:
    """Every file a finished case ``name`` leaves in ``output_dir`` (what ``--continue`` checks): one segmentation
    per format, the JSON sidecar, the Slicer and ITK-SNAP label tables, and the probabilities if asked for."""
    output_dir = Path(output_dir)
    base = f"{name}_{output_postfix}"
    files = [output_dir / f"{base}{FORMAT_SUFFIXES[f]}" for f in check_formats(formats)]
    files += [output_dir / f"{base}{suffix}" for suffix in (SIDECAR_SUFFIX, SLICER_TABLE_SUFFIX, ITKSNAP_TABLE_SUFFIX)]
    if save_probabilities:
        files.append(output_dir / f"{name}_{PROBABILITIES_POSTFIX}.nii.gz")
    return files
