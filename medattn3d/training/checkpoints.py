"""Checkpoints that survive a kill: atomic writes, resume from the last epoch, best model as ``models/model.pt``.

MONAI's ``CheckpointSaver`` writes in place (non-atomic), so a kill during a write can corrupt the only copy; these
handlers write to a temporary file in the same folder, flush it to disk and rename it over the old one. Weights are
loaded back with :func:`load_weights`, which says in one line what differs when they do not fit the bundle's network
(MONAI's ``CheckpointLoader`` prints one "size mismatch" line per tensor instead).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from monai.handlers import CheckpointLoader

from medattn3d.errors import InputError
from medattn3d.outputs.atomic import atomic_path, atomic_write_text

LOGGER = logging.getLogger("medattn3d.training")


def is_main_process() -> bool:
    """True outside DDP and on rank 0: only one process writes files."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to ``path`` through the package's atomic write (synced to disk before the rename): the old
    checkpoint stays until the new one is complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, fsync=True) as tmp:
        torch.save(obj, tmp)
    return path


def _unwrap(network: torch.nn.Module) -> torch.nn.Module:
    return network.module if isinstance(network, torch.nn.parallel.DistributedDataParallel) else network


class TrainingCheckpoint:
    """Save the training state every ``interval`` epochs to ``ckpt_dir/checkpoint_last.pt`` and resume from it.

    Args:
        ckpt_dir: folder of the checkpoint.
        save_dict: objects with ``state_dict``/``load_state_dict`` (network, optimizer, scheduler); the trainer's
            own state (epoch, iteration) is added as ``"trainer"`` when attached.
        interval: epochs between saves (the last epoch is always saved).
        resume: load ``checkpoint_last.pt`` when the run starts, if present. With ``False`` an existing one is
            renamed ``checkpoint_last.<time>.pt`` rather than overwritten.
    """

    filename = "checkpoint_last.pt"

    def __init__(self, ckpt_dir: str | Path, save_dict: dict[str, Any], interval: int = 1, resume: bool = True) -> None:
        self.path = Path(ckpt_dir) / self.filename
        self.save_dict = dict(save_dict)
        self.interval = interval
        self.resume = resume

    def attach(self, engine: Engine) -> None:
        self.save_dict["trainer"] = engine
        engine.add_event_handler(Events.STARTED, self.load)
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self.save)
        engine.add_event_handler(Events.COMPLETED, self.save)

    def load(self, engine: Engine) -> None:
        if not self.path.is_file():
            return
        if not self.resume:
            if is_main_process():
                kept = self.path.with_name(f"checkpoint_last.{time.strftime('%Y%m%d-%H%M%S')}.pt")
                os.replace(self.path, kept)
                LOGGER.info("resume is off: kept the previous run's checkpoint as %s", kept)
            return
        loader = CheckpointLoader(load_path=str(self.path), load_dict=self._targets(), map_location="cpu")
        try:
            loader(engine)
        except Exception as err:
            raise RuntimeError(f"{self.path}: cannot resume from this checkpoint ({err})") from err
        LOGGER.info("resumed from %s at epoch %d", self.path, engine.state.epoch)

    def _targets(self) -> dict[str, Any]:
        return {k: (_unwrap(v) if isinstance(v, torch.nn.Module) else v) for k, v in self.save_dict.items()}

    def save(self, engine: Engine) -> None:
        if is_main_process():
            atomic_save({k: v.state_dict() for k, v in self._targets().items()}, self.path)


class BestModelSaver:
    """Attach to the validator: when its key metric improves, write the network's weights to ``ckpt_dir/model.pt``
    (the model-zoo convention) and the metric to ``ckpt_dir/model_metric.json``, both atomically.

    With ``metadata_file``, the bundle's ``configs/metadata.json`` gets the best validation Dice in ``eval_metrics``
    (mean and one entry per foreground class, named by ``class_names``), rewritten atomically with the model.
    """

    def __init__(
        self,
        ckpt_dir: str | Path,
        network: torch.nn.Module,
        resume: bool = True,
        metadata_file: str | Path | None = None,
        class_names: dict[str, str] | None = None,
        per_class_metric: str = "val_dice_per_class",
    ) -> None:
        self.model_path = Path(ckpt_dir) / "model.pt"
        self.metric_path = Path(ckpt_dir) / "model_metric.json"
        self.network = network
        self.metadata_file = Path(metadata_file) if metadata_file else None
        self.class_names = dict(class_names or {})
        self.per_class_metric = per_class_metric
        self.best, self.best_epoch = float("-inf"), -1
        if resume and self.metric_path.is_file() and self.model_path.is_file():
            record = json.loads(self.metric_path.read_text(encoding="utf-8"))
            self.best, self.best_epoch = float(record["value"]), int(record.get("epoch", -1))

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.seed_best)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def seed_best(self, engine: Engine) -> None:
        """A resumed run's validator starts from the best metric already saved, so its "new best" log and the
        validation line's "best ... at epoch" agree with ``model.pt`` (MONAI's evaluator forgets it on restart)."""
        best = getattr(engine.state, "best_metric", None)
        if self.best == self.best and self.best > float("-inf") and (best is None or best < self.best):
            engine.state.best_metric, engine.state.best_metric_epoch = self.best, self.best_epoch

    def __call__(self, engine: Engine) -> None:
        name = engine.state.key_metric_name
        value = float(engine.state.metrics[name])
        improved = value > self.best or not self.model_path.is_file()  # a NaN metric still leaves a model
        if not is_main_process() or not improved:
            return
        if value == value:
            self.best, self.best_epoch = value, int(engine.state.epoch)
        atomic_save(_unwrap(self.network).state_dict(), self.model_path)
        record = {"key_metric": name, "value": value, "epoch": int(engine.state.epoch)}
        atomic_write_text(self.metric_path, json.dumps(record, indent=1) + "\n")
        if self.metadata_file is not None:
            self._write_eval_metrics(engine, name, value)
        LOGGER.info("new best %s = %.4f at epoch %d: saved %s", name, value, engine.state.epoch, self.model_path)

    def _write_eval_metrics(self, engine: Engine, name: str, value: float) -> None:
        """``eval_metrics`` of the bundle's metadata: the key metric and the per-class Dice under class names."""
        metadata = json.loads(self.metadata_file.read_text(encoding="utf-8"))
        metrics: dict[str, Any] = {name: round(value, 4), "epoch": int(engine.state.epoch)}
        per_class = engine.state.metrics.get(self.per_class_metric)
        if per_class is not None:
            values = [float(v) for v in torch.as_tensor(per_class).flatten()]
            names = [n for k, n in sorted(self.class_names.items(), key=lambda kv: int(kv[0])) if k != "0"]
            names = names if len(names) == len(values) else [f"class {i + 1}" for i in range(len(values))]
            metrics[self.per_class_metric] = {n: round(v, 4) for n, v in zip(names, values, strict=True)}
        metadata["eval_metrics"] = metrics
        atomic_write_text(self.metadata_file, json.dumps(metadata, indent=4) + "\n")


class FinalValidation:
    """Attach to the trainer: validate once more when training ends on an epoch the validation schedule skipped,
    so the best-model saver always sees the last weights and ``models/model.pt`` always exists after training."""

    def __init__(self, validator: Engine, interval: int) -> None:
        self.validator = validator
        self.interval = max(int(interval), 1)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if int(engine.state.epoch) % self.interval != 0:
            self.validator.run(int(engine.state.epoch))


def _state_dict_of(loaded: Any, path: Path) -> dict[str, torch.Tensor]:
    """The network weights inside a loaded checkpoint: a plain state dict or the ``"model"`` entry of a dict."""
    if isinstance(loaded, dict) and isinstance(loaded.get("model"), dict):
        loaded = loaded["model"]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise InputError(path, "is not a checkpoint of network weights (expected a state dict)")
    return {k.removeprefix("module."): v for k, v in loaded.items()}


def describe_mismatch(network: torch.nn.Module, weights: dict[str, torch.Tensor]) -> str | None:
    """One line saying why ``weights`` do not fit ``network``: another number of classes (output heads differ in
    their first dimension only, all by the same count), of input channels (the first convolution differs in its
    second dimension only), or another network; None when they fit."""
    expected = _unwrap(network).state_dict()
    if set(expected) != set(weights):
        return "was trained for a different network (its layers differ from the bundle's network_def)"
    wrong = [k for k in expected if expected[k].shape != weights[k].shape]
    if not wrong:
        return None
    first_conv = next(k for k, v in expected.items() if v.dim() >= 3)
    parts, explained = [], set()
    heads = [k for k in wrong if k != first_conv and expected[k].shape[1:] == weights[k].shape[1:]]
    pairs = {(int(weights[k].shape[0]), int(expected[k].shape[0])) for k in heads}
    if len(pairs) == 1:
        theirs, ours = pairs.pop()
        parts.append(f"predicts {theirs} classes, the bundle {ours}")
        explained.update(heads)
    if first_conv in wrong:
        ours_shape, theirs_shape = expected[first_conv].shape, weights[first_conv].shape
        if ours_shape[0] == theirs_shape[0] and ours_shape[2:] == theirs_shape[2:]:
            parts.append(f"takes {int(theirs_shape[1])} input channels, the bundle {int(ours_shape[1])}")
            explained.add(first_conv)
    if set(wrong) - explained:
        parts.append("was trained for a different network (layer shapes differ from the bundle's network_def)")
    return "checkpoint " + "; it ".join(parts)


def load_weights(network: torch.nn.Module, path: str | Path, map_location: Any = "cpu") -> None:
    """Load trained weights (a plain state dict, or a dict with ``"model"``) into ``network``.

    Raises ``InputError(path, ...)`` with one line saying what differs when they do not fit (e.g. "checkpoint
    predicts 2 classes, the bundle 4"), or that the file is missing, instead of PyTorch's list of size mismatches.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no trained weights here (train the bundle first, or give the checkpoint file)")
    try:
        loaded = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises a zoo of types for truncated/foreign files
        raise InputError(path, f"cannot be read as a PyTorch checkpoint ({type(err).__name__})") from err
    weights = _state_dict_of(loaded, path)
    problem = describe_mismatch(network, weights)
    if problem is not None:
        raise InputError(path, problem)
    _unwrap(network).load_state_dict(weights)


class LoadWeights:
    """Ignite handler: :func:`load_weights` into ``network`` when the engine starts (the bundles' evaluate,
    inference and explain configs use it in place of MONAI's ``CheckpointLoader``)."""

    def __init__(self, load_path: str | Path, network: torch.nn.Module, map_location: Any = "cpu") -> None:
        self.load_path = load_path
        self.network = network
        self.map_location = map_location

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine | None = None) -> None:
        load_weights(self.network, self.load_path, self.map_location)
