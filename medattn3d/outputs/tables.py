"""Per-case label facts and the files that carry them: the JSON sidecar, a 3D Slicer colour table and an ITK-SNAP
label description file.

Formats followed:
- Slicer colour table (``.ctbl``/``.txt``, Slicer developer guide, "Colors" module): header lines start with ``#``,
  the first is ``# Color table file <name>``; one line per label: ``index name R G B A`` (0-255, spaces in names
  replaced by ``_``).
- ITK-SNAP label description file (what ITK-SNAP's Segmentation > Import Label Descriptions reads and its export
  writes): ``#`` comments, then ``IDX R G B A VIS MSH "LABEL"`` with R/G/B 0-255, A (opacity) 0-1, VIS and MSH 0/1.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from medattn3d.data.classes import class_values, is_identity
from medattn3d.outputs.terminology import Term, segment_term


@dataclass(frozen=True)
class LabelEntry:
    """One class of a label map: value, name, meaning/colour and its size in this case."""

    value: int
    name: str
    term: Term
    voxels: int
    volume_ml: float

    @property
    def colour(self) -> tuple[int, int, int]:
        return self.term.colour


def class_name_map(class_names: Mapping[Any, str] | list[str] | None, num_classes: int) -> dict[int, str]:
    """``{label: name}`` for labels ``0 .. num_classes - 1`` from a bundle's ``class_names`` (dict with string or
    int keys, or a list); missing names become ``class_<k>``, label 0 ``background``."""
    names: dict[int, str] = {}
    if isinstance(class_names, Mapping):
        names = {int(k): str(v) for k, v in class_names.items()}
    elif class_names is not None:
        names = dict(enumerate(str(v) for v in class_names))
    return {k: names.get(k, "background" if k == 0 else f"class_{k}") for k in range(num_classes)}


def written_values(class_names: Mapping[Any, str] | list[str] | None, num_classes: int) -> list[int]:
    """The label value written for each class index: the dataset's own values when ``class_names`` is keyed by
    them and names every class (BraTS: ``[0, 1, 2, 4]``), else ``0 .. num_classes - 1``."""
    values = class_values(class_names, num_classes)
    return values if len(values) == num_classes else list(range(num_classes))


def value_name_map(class_names: Mapping[Any, str] | list[str] | None, num_classes: int) -> dict[int, str]:
    """``{written label value: name}``: :func:`class_name_map` re-keyed by :func:`written_values`."""
    values = written_values(class_names, num_classes)
    if is_identity(values):
        return class_name_map(class_names, num_classes)
    assert isinstance(class_names, Mapping)  # only a dict can name values other than 0 .. n - 1
    by_value = {int(k): str(v) for k, v in class_names.items()}
    return {value: by_value[value] for value in values}


def label_counts(labels: np.ndarray, minlength: int = 0) -> np.ndarray:
    """Voxels per label value ``0 .. max(labels.max(), minlength - 1)`` of a non-negative integer label map.

    ``torch.bincount`` counts uint8/int16 labels as they are, in their memory order; numpy's ``bincount`` first
    copies them to int64 (8x the label map), which took 0.6 s on a 512 x 512 x 128 map."""
    flat = np.ravel(np.asarray(labels), order="K")  # a view for C- or F-ordered maps
    if flat.dtype in (np.uint8, np.int16, np.int32, np.int64) and flat.size:
        return torch.bincount(torch.from_numpy(flat), minlength=minlength).numpy()
    return np.bincount(flat, minlength=minlength)


def label_entries(labels: np.ndarray, names: Mapping[int, str], voxel_volume_mm3: float) -> list[LabelEntry]:
    """Entries for every class in ``names`` (background included) with voxel counts and volumes in ml."""
    counts = label_counts(labels, max(names) + 1)
    return [
        LabelEntry(
            value, name, segment_term(name, value), int(counts[value]), float(counts[value]) * voxel_volume_mm3 / 1000
        )
        for value, name in sorted(names.items())
    ]


def sidecar(
    entries: list[LabelEntry],
    files: Mapping[str, str],
    source: str,
    spacing_mm: tuple[float, ...],
    shape: tuple[int, ...],
    model: Mapping[str, Any] | None = None,
) -> str:
    """The JSON sidecar text: the written files, the source, the grid, and one record per label."""
    document = {
        "version": 1,
        "source": source,
        "files": dict(files),
        "shape": [int(s) for s in shape],
        "spacing_mm": [round(float(s), 6) for s in spacing_mm],
        "voxel_volume_ml": round(float(np.prod(spacing_mm)) / 1000, 9),
        "labels": [
            {
                "value": e.value,
                "name": e.name,
                "colour_rgb": [0, 0, 0] if e.value == 0 else list(e.colour),  # as the Slicer table: no colour
                "voxels": e.voxels,
                "volume_ml": round(e.volume_ml, 4),
                "code": None
                if e.value == 0
                else {
                    "category": [e.term.category.scheme, e.term.category.value, e.term.category.meaning],
                    "type": [e.term.type.scheme, e.term.type.value, e.term.type.meaning],
                    "modifier": [e.term.modifier.scheme, e.term.modifier.value, e.term.modifier.meaning]
                    if e.term.modifier
                    else None,
                    "generic": not e.term.known,
                },
            }
            for e in entries
        ],
    }
    if model:
        document["model"] = dict(model)
    return json.dumps(document, indent=2) + "\n"


def _token(name: str) -> str:
    return "_".join(name.split()) or "unnamed"


def slicer_color_table(entries: list[LabelEntry], title: str) -> str:
    """3D Slicer discrete colour table text (``.ctbl``): background transparent, every class opaque."""
    lines = [f"# Color table file {title}", f"# {len(entries)} values"]
    for e in entries:
        alpha = 0 if e.value == 0 else 255
        red, green, blue = (0, 0, 0) if e.value == 0 else e.colour
        lines.append(f"{e.value} {_token(e.name)} {red} {green} {blue} {alpha}")
    return "\n".join(lines) + "\n"


def itksnap_label_description(entries: list[LabelEntry]) -> str:
    """ITK-SNAP label description text: label 0 is ITK-SNAP's "Clear Label" (transparent, hidden)."""
    lines = [
        "################################################",
        "# ITK-SnAP Label Description File",
        "# File format:",
        "# IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL",
        "# Fields:",
        "#    IDX:   Zero-based index",
        "#    -R-:   Red color component (0..255)",
        "#    -G-:   Green color component (0..255)",
        "#    -B-:   Blue color component (0..255)",
        "#    -A-:   Label transparency (0.00 .. 1.00)",
        "#    VIS:   Label visibility (0 or 1)",
        "#    MSH:   Label mesh visibility (0 or 1)",
        "#  LABEL:   Label description",
        "################################################",
    ]
    for e in entries:
        if e.value == 0:
            red, green, blue, alpha, visible = 0, 0, 0, 0.0, 0
        else:
            (red, green, blue), alpha, visible = e.colour, 1.0, 1
        name = e.name.replace('"', "'")
        lines.append(f'{e.value:5d} {red:5d} {green:4d} {blue:4d} {alpha:8.2f} {visible:2d} {visible:2d}    "{name}"')
    return "\n".join(lines) + "\n"
