"""Whole-volume tensor work in cache-sized blocks spread over a thread pool, one torch thread per block.

A single torch op over a CT-sized volume streams each operand through main memory, and a chain of them (gather,
gather, ``lerp``; compare, fill, select) does so once per op, with full-size temporaries in between. Done block by
block (about a megabyte each), a block's temporaries stay in cache. Torch's own intra-op threads would synchronise at
the end of every small op (an OpenMP barrier, which costs milliseconds once the cores are shared with other
processes), so the blocks run on a pool of Python threads instead (torch releases the GIL inside its kernels), with
torch's intra-op threads set to one while they run. Measured on the whole-volume run's resampling: 1.5-2x faster
than whole-volume ops with two intra-op threads, results bit for bit the same.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from typing import Any

import torch

BLOCK_BYTES = 1 << 20

_LOCK = threading.Lock()
_POOLS: dict[int, ThreadPoolExecutor] = {}


def block_rows(row_bytes: int, block_bytes: int | None = None) -> int:
    """How many rows of ``row_bytes`` make one block of ``block_bytes`` (default :data:`BLOCK_BYTES`), at least one."""
    return max(1, (BLOCK_BYTES if block_bytes is None else block_bytes) // max(1, row_bytes))


def _pool(threads: int) -> ThreadPoolExecutor:
    if threads not in _POOLS:
        _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="medattn3d-blocks")
    return _POOLS[threads]


def run_blocks(jobs: Sequence[Callable[[], Any]]) -> None:
    """Run independent ``jobs`` (each writing its own part of a result) on ``torch.get_num_threads()`` pool threads
    with one intra-op thread each; in order on this thread when there is one thread, one job, or another caller is
    already using the pool (nested or concurrent calls). Exceptions propagate after every job has ended."""
    threads = torch.get_num_threads()
    if threads <= 1 or len(jobs) <= 1 or not _LOCK.acquire(blocking=False):
        for job in jobs:
            job()
        return
    try:
        pool = _pool(threads)
        torch.set_num_threads(1)
        try:
            futures = [pool.submit(job) for job in jobs]
            for future in futures:
                future.exception()  # wait for all before raising any
            for future in futures:
                future.result()
        finally:
            torch.set_num_threads(threads)
    finally:
        _LOCK.release()


@contextmanager
def block_stream() -> Iterator[Callable[[Callable[[], Any]], None]]:
    """Like :func:`run_blocks` for jobs that arrive over time: yields ``submit(job)``; jobs run on the pool while
    this thread goes on (e.g. decompressing the next part of a file), and leaving the block waits for all of them
    (the first failure is raised then). Inline when :func:`run_blocks` would run inline."""
    threads = torch.get_num_threads()
    if threads <= 1 or not _LOCK.acquire(blocking=False):
        yield lambda job: job()
        return
    futures: list = []
    try:
        pool = _pool(threads)
        torch.set_num_threads(1)
        try:
            yield lambda job: futures.append(pool.submit(job))
        finally:
            for future in futures:
                future.exception()  # every job has ended, also when the caller failed
            torch.set_num_threads(threads)
        for future in futures:
            future.result()
    finally:
        _LOCK.release()


def tile_slices(shape: Sequence[int], element_bytes: int) -> list[tuple]:
    """Index tuples of the tiles :func:`copy_blocked` uses for a tensor of ``shape``: over the first and last axes."""
    first, last = (8, 32) if element_bytes >= 4 else (16, 16)
    rows, columns = range(0, shape[0], first), range(0, shape[-1], last)
    return [(slice(i, i + first), ..., slice(k, k + last)) for i in rows for k in columns]


def copy_blocked(
    target: torch.Tensor, source: torch.Tensor, convert: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> torch.Tensor:
    """``target.copy_(source)`` (or of ``convert(source)``, applied tile by tile: e.g. a dtype change with scaling)
    in tiles over the first and last axes, for copies that change the memory order (NIfTI's column-major voxels to
    row-major and back): a whole-volume strided copy misses the cache (and TLB) on one side for every element; tiles
    of a few hundred KB do not (a 512 x 512 x 128 float volume: 2-3x faster)."""
    if target.shape != source.shape:
        raise ValueError(f"copy_blocked: target shape {tuple(target.shape)} differs from {tuple(source.shape)}")
    if source.dim() < 2:
        return target.copy_(source if convert is None else convert(source))
    tiles = tile_slices(source.shape, max(source.element_size(), target.element_size()))
    run_blocks([partial(_copy_tile, target[tile], source[tile], convert) for tile in tiles])
    return target


def _copy_tile(target: torch.Tensor, source: torch.Tensor, convert: Callable | None) -> None:
    target.copy_(source if convert is None else convert(source))
