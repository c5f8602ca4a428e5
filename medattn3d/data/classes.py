"""The label values a dataset uses, and the class index each one trains as.

A network's output channel ``k`` is class ``k``; a dataset's label files may use other values (BraTS: 0, 1, 2, 4).
The bundle's ``class_names`` (the datalist's ``labels``) are keyed by the values in the files, so the mapping needs
no setting of its own: value ``values[k]`` trains as class ``k`` (``MapLabelValued`` in the preprocessing) and is
written back as ``values[k]`` (the output writers).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def class_values(class_names: Mapping[Any, Any] | Sequence[Any] | None, num_classes: int | None = None) -> list[int]:
    """The label value of each class index, ascending: the integer keys of ``class_names`` (a dict like
    ``{"0": "background", "1": "edema", "2": "necrosis", "4": "enhancing"}``), or ``0 .. n - 1`` for a list, for
    ``None`` (with ``num_classes``), or for a dict whose keys are not all non-negative integers."""
    if isinstance(class_names, Mapping):
        keys = [str(k) for k in class_names]
        if keys and all(k.isdigit() for k in keys):
            return sorted({int(k) for k in keys})
        return list(range(len(keys)))
    count = len(class_names) if class_names is not None else int(num_classes or 0)
    return list(range(count))


def is_identity(values: Sequence[int]) -> bool:
    """True when class ``k`` is label value ``k`` for every class (nothing to map)."""
    return list(values) == list(range(len(values)))
