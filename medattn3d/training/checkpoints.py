"""Checkpoints that survive a kill: atomic writes, resume from the last epoch, best model as ``models/model.pt``.

MONAI's ``CheckpointSaver`` writes in place (non-atomic), so a kill during a write can corrupt the only copy; these
handlers write to a temporary file in the same folder, flush it to disk and rename it over the old one.
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

LOGGER = logging.getLogger("medattn3d.training")


def is_main_process() -> bool:
    """True outside DDP and on rank 0: only one process writes files."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to ``path`` through a temporary file and an atomic rename; the old file stays until then."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as stream:
        torch.save(obj, stream)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(tmp, path)
    return path


def atomic_write_text(text: str, path: str | Path) -> Path:
    """Write a small text file atomically (temporary file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
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
    (the model-zoo convention) and the metric to ``ckpt_dir/model_metric.json``, both atomically."""

    def __init__(self, ckpt_dir: str | Path, network: torch.nn.Module, resume: bool = True) -> None:
        self.model_path = Path(ckpt_dir) / "model.pt"
        self.metric_path = Path(ckpt_dir) / "model_metric.json"
        self.network = network
        self.best = float("-inf")
        if resume and self.metric_path.is_file() and self.model_path.is_file():
            self.best = float(json.loads(self.metric_path.read_text())["value"])

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        name = engine.state.key_metric_name
        value = float(engine.state.metrics[name])
        if value <= self.best or not is_main_process():
            return
        self.best = value
        atomic_save(_unwrap(self.network).state_dict(), self.model_path)
        record = {"key_metric": name, "value": value, "epoch": int(engine.state.epoch)}
        atomic_write_text(json.dumps(record, indent=1) + "\n", self.metric_path)
        LOGGER.info("new best %s = %.4f at epoch %d: saved %s", name, value, engine.state.epoch, self.model_path)
