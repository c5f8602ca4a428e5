"""Training report: loss and per-class validation Dice curves as a PNG (and TensorBoard scalars) during training."""

from __future__ import annotations

import csv
import json
import logging
import re
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from medattn3d.outputs.atomic import atomic_write_text
from medattn3d.training.checkpoints import is_main_process


def foreground_names(class_names: list[str] | dict[str, str] | None) -> list[str]:
    """Foreground class names in label order: a list as given, or a manifest's ``labels`` without the background."""
    if isinstance(class_names, dict):
        return [v for k, v in sorted(class_names.items(), key=lambda kv: int(kv[0])) if k != "0"]
    return list(class_names or [])


class ValidationLog:
    """``epoch_print_logger`` for MONAI's ``StatsHandler`` on a validator: one line per validation with every
    scalar metric, the per-class Dice under the class names, and the best key metric so far.

    MONAI's default prints a per-class tensor glued to the next metric (``tensor([0.74, 0.64])val_mean_dice``) and
    without names; this is what a reader of the training log wants instead.
    """

    def __init__(
        self, class_names: list[str] | dict[str, str] | None = None, logger_name: str = "medattn3d.training"
    ) -> None:
        self.class_names = foreground_names(class_names)
        self.logger = logging.getLogger(logger_name)

    def format(self, engine: Engine) -> str:
        """The line for the engine's current state."""
        parts = [f"Epoch[{engine.state.epoch}] validation"]
        for name, value in engine.state.metrics.items():
            scalar = isinstance(value, (int, float))
            values = [value] if scalar else torch.as_tensor(value).flatten().tolist()
            # a per-class tensor is named even for one class ("val_dice_per_class: spleen 0.91")
            if len(values) == 1 and (scalar or len(self.class_names) != 1):
                parts.append(f"{name} {float(values[0]):.4f}")
            else:
                names = self.class_names if len(self.class_names) == len(values) else []
                names = names or [f"class{i + 1}" for i in range(len(values))]
                parts.append(f"{name}: " + ", ".join(f"{n} {v:.4f}" for n, v in zip(names, values, strict=True)))
        if getattr(engine.state, "key_metric_name", None):
            best, epoch = engine.state.best_metric, engine.state.best_metric_epoch
            parts.append(f"best {engine.state.key_metric_name} {best:.4f} at epoch {epoch}")
        return " | ".join(parts)

    def __call__(self, engine: Engine) -> None:
        self.logger.info(self.format(engine))


class TrainingReport:
    """Attach to the trainer; records the epoch's mean loss and, after each validation, the validator's per-class
    Dice (metric ``per_class_metric``, a tensor) and key metric. Writes ``training_report.png`` (curves),
    ``training_history.json`` and per-class TensorBoard scalars to ``output_dir`` after every validation.

    Args:
        output_dir: where the files go (the bundle's ``eval/``).
        validator: the validation engine.
        class_names: names of the foreground classes, in metric order (background excluded).
        per_class_metric: name of the validator metric holding per-class Dice.
    """

    def __init__(
        self,
        output_dir: str | Path,
        validator: Engine,
        class_names: list[str] | dict[str, str] | None = None,
        per_class_metric: str = "val_dice_per_class",
    ) -> None:
        self.output_dir = Path(output_dir)
        self.validator = validator
        self.class_names = foreground_names(class_names)
        self.per_class_metric = per_class_metric
        self.history: dict[str, list[Any]] = {"epoch": [], "loss": [], "val_epoch": [], "val_dice": [], "val_mean": []}
        self._losses: list[float] = []
        self._writer = None

    def attach(self, trainer: Engine) -> None:
        self.trainer = trainer
        trainer.add_event_handler(Events.ITERATION_COMPLETED, self._record_loss)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, self._record_epoch)
        trainer.add_event_handler(Events.COMPLETED, self._finish)
        self.validator.add_event_handler(Events.EPOCH_COMPLETED, self._record_validation)

    def _record_loss(self, engine: Engine) -> None:
        output = engine.state.output
        loss = output[0]["loss"] if isinstance(output, list) else output["loss"]
        self._losses.append(float(loss))

    def _record_epoch(self, engine: Engine) -> None:
        if self._losses:
            self.history["epoch"].append(int(engine.state.epoch))
            self.history["loss"].append(sum(self._losses) / len(self._losses))
        self._losses = []

    def _finish(self, engine: Engine) -> None:
        if is_main_process() and self.history["epoch"]:
            self.write()

    def _record_validation(self, engine: Engine) -> None:
        metrics = engine.state.metrics
        per_class = metrics.get(self.per_class_metric)
        values = [float(v) for v in torch.as_tensor(per_class).flatten()] if per_class is not None else []
        epoch = int(self.trainer.state.epoch)
        self.history["val_epoch"].append(epoch)
        self.history["val_dice"].append(values)
        self.history["val_mean"].append(float(metrics.get(engine.state.key_metric_name, float("nan"))))
        if is_main_process():
            self._write_tensorboard(epoch, values)
            self.write()

    def _names(self, count: int) -> list[str]:
        return self.class_names[:count] + [f"class {i + 1}" for i in range(len(self.class_names), count)]

    def _write_tensorboard(self, epoch: int, values: list[float]) -> None:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.output_dir))
        for name, value in zip(self._names(len(values)), values, strict=True):
            self._writer.add_scalar(f"val_dice/{name}", value, epoch)
        self._writer.flush()

    def write(self) -> Path:
        """Write the curves and the history now; returns the PNG path."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        self.output_dir.mkdir(parents=True, exist_ok=True)
        figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
        left.plot(self.history["epoch"], self.history["loss"], color="tab:blue")
        left.set(title="training loss", xlabel="epoch", ylabel="loss")
        left.grid(alpha=0.3)
        per_class = self.history["val_dice"]
        count = max((len(v) for v in per_class), default=0)
        for index, name in enumerate(self._names(count)):
            right.plot(
                self.history["val_epoch"],
                [v[index] if index < len(v) else None for v in per_class],
                marker="o",
                label=name,
            )
        right.plot(self.history["val_epoch"], self.history["val_mean"], color="black", linestyle="--", label="mean")
        right.set(title="validation Dice", xlabel="epoch", ylabel="Dice", ylim=(0, 1))
        right.grid(alpha=0.3)
        right.legend(loc="lower right", fontsize=8)
        figure.tight_layout()
        path = self.output_dir / "training_report.png"
        tmp = path.with_name(".training_report.tmp.png")
        figure.savefig(tmp)
        plt.close(figure)
        tmp.replace(path)
        atomic_write_text(self.output_dir / "training_history.json", json.dumps(self.history, indent=1) + "\n")
        return path


def dice_table(eval_dir: Path, class_names: dict[str, str]) -> list[tuple[str, float]]:
    """Per-class mean Dice from the ``MetricsSaver`` summary CSV (``val_mean_dice_summary.csv``): rows named by
    :class:`~medattn3d.training.NamedMetricsSaver` as they are, MONAI's ``class0``, ... (an older evaluation) named
    by ``class_names`` (``{"1": "liver", ...}``; the metric leaves out the background, so ``class0`` is label 1)."""
    rows: list[tuple[str, float]] = []
    foreground = foreground_names(class_names)
    with open(eval_dir / "val_mean_dice_summary.csv", encoding="utf-8") as stream:
        for row in csv.reader(stream):
            if not row or row[0] == "class":  # the header row
                continue
            name = row[0]
            if re.fullmatch(r"class\d+", name):  # MONAI's default column names (class0 = the first foreground class)
                index = int(name.removeprefix("class"))
                name = foreground[index] if index < len(foreground) else name
            rows.append((name, float(row[1])))
    return rows
