"""Training support the bundle configs cannot express in JSON: atomic checkpoints, resume, best-model saving,
weights that say why they do not fit."""

from medattn3d.training.checkpoints import (
    BestModelSaver,
    FinalValidation,
    LoadWeights,
    TrainingCheckpoint,
    atomic_save,
    load_weights,
)
from medattn3d.training.metrics_saver import NamedMetricsSaver

__all__ = [
    "BestModelSaver",
    "FinalValidation",
    "LoadWeights",
    "NamedMetricsSaver",
    "TrainingCheckpoint",
    "atomic_save",
    "load_weights",
]
