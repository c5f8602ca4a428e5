"""Training support the bundle configs cannot express in JSON: atomic checkpoints, resume, best-model saving."""

from medattn3d.training.checkpoints import BestModelSaver, TrainingCheckpoint, atomic_save

__all__ = ["BestModelSaver", "TrainingCheckpoint", "atomic_save"]
