"""How a network runs: precision, inference preparation (BatchNorm folding, bf16 weights), the bf16 conv guard and
the CPU allocator setting."""

from medattn3d.engine.backends import RUNTIMES, RuntimeNetwork
from medattn3d.engine.precision import (
    PRECISIONS,
    PrecisionInferer,
    PrepareForInference,
    autocast_dtype,
    prepare_for_inference,
)
from medattn3d.engine.runtime import tune_cpu_allocator

__all__ = [
    "PRECISIONS",
    "RUNTIMES",
    "PrecisionInferer",
    "PrepareForInference",
    "RuntimeNetwork",
    "autocast_dtype",
    "prepare_for_inference",
    "tune_cpu_allocator",
]
