"""Process pools for work that reads whole volumes (the dataset check, the fingerprint): one case per worker.

Workers come from a forkserver (spawn where there is none), never from a fork of a process that may already hold
torch threads; the server imports the readers once, forks each worker from that state, and later pools reuse it.
Starting workers still costs seconds, so callers use them only when there is enough data to read.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterable
from pathlib import Path

MIN_BYTES_FOR_WORKERS = 64 * 2**20  # below this much data on disk, one process is faster than starting workers


def worker_context(preload: Iterable[str] = ()) -> multiprocessing.context.BaseContext:
    """The multiprocessing context for reader pools; ``preload`` modules are imported once by the forkserver."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["medattn3d.data.loading", *preload])
    return context


def init_worker() -> None:
    """Pool initializer: one torch thread per worker (the workers already use the cores; more would oversubscribe)."""
    import torch

    torch.set_num_threads(1)


def bytes_on_disk(paths: Iterable[str | Path]) -> int:
    """Total size of the files (a folder: the files in it), 0 for what does not exist."""
    total = 0
    for path in paths:
        path = Path(path)
        try:
            total += (
                sum(p.stat().st_size for p in path.iterdir() if p.is_file()) if path.is_dir() else path.stat().st_size
            )
        except OSError:
            continue
    return total


def use_workers(workers: int, jobs: int, data_bytes: int) -> bool:
    """Whether a pool pays for itself: more than one worker and one job, and enough data to read."""
    return workers > 1 and jobs > 1 and data_bytes >= MIN_BYTES_FOR_WORKERS and os.cpu_count() != 1
