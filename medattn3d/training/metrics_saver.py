"""MONAI's ``MetricsSaver`` with the classes named: ``val_mean_dice_raw.csv`` and ``_summary.csv`` get columns
``liver,spleen,...`` instead of ``class0,class1,...`` (where ``class0`` was label 1, the background being left out).

MONAI 1.6.1's ``write_metrics_reports`` takes ``class_labels`` but its ``MetricsSaver`` never passes them; this
subclass passes the bundle's class names for the duration of its own write, and leaves MONAI's defaults whenever the
names do not match the metric's columns (a metric that includes the background, say).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import monai.handlers.metrics_saver as monai_metrics_saver
from monai.handlers import MetricsSaver

from medattn3d.training.report import foreground_names


def column_names(
    class_names: list[str] | dict[str, str] | None, columns: int, delimiter: str = ","
) -> list[str] | None:
    """The names of a per-class metric's ``columns`` (foreground classes in label order), or ``None`` when the
    names do not account for every column (MONAI then writes ``class0``, ...). A delimiter inside a name becomes
    ``_`` so that the CSV stays one column per class."""
    names = foreground_names(class_names)
    if len(names) != columns:
        return None
    return [str(name).replace(delimiter, "_") for name in names]


class NamedMetricsSaver(MetricsSaver):
    """``MetricsSaver`` (same arguments) plus ``class_names``: the bundle's ``{"0": "background", "1": ...}`` or a
    list of foreground names, used as the per-class column names of every ``metric_details`` report."""

    def __init__(self, *args: Any, class_names: list[str] | dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.class_names = class_names

    @contextmanager
    def _named_columns(self) -> Iterator[None]:
        original = monai_metrics_saver.write_metrics_reports

        def write(*args: Any, **kwargs: Any) -> None:
            details = kwargs.get("metric_details") or {}
            widths = {int(v.shape[1]) if getattr(v, "ndim", 0) == 2 else 1 for v in details.values()}
            if len(widths) == 1 and kwargs.get("class_labels") is None:
                kwargs["class_labels"] = column_names(self.class_names, widths.pop(), self.deli)
            original(*args, **kwargs)

        monai_metrics_saver.write_metrics_reports = write
        try:
            yield
        finally:
            monai_metrics_saver.write_metrics_reports = original

    def __call__(self, engine: Any) -> None:
        with self._named_columns():
            super().__call__(engine)
