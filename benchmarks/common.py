"""Shared benchmark helpers: medians of repeated timings, peak memory of a step, GFLOP counts and GFLOP/s next to the
machine's measured matmul peaks, tables and JSON output.

Every benchmark reports, per row, the arithmetic it executed and its rate against the peaks of the same run::

    peaks = matmul_peaks()                           # first thing in main(); store as payload["matmul_peaks"]
    gflop = network_gflop(net, x)                    # or count_gflop(step_fn) / network_gflop(net, x, train=True)
    add_throughput(row, gflop * windows, peaks)      # row["median_s"] -> gflop, gflop_per_s, pct_fp32/bf16_peak
    add_throughput(row, None, peaks, reason="I/O")   # rows without arithmetic: None and a gflop_reason
"""

from __future__ import annotations

import functools
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from medattn3d.engine.precision import cpu_prefers_bf16, cpu_supports_bf16


def _status_bytes(field: str) -> int:
    """A memory field of /proc/self/status (``VmRSS``, ``VmHWM``) in bytes; 0 where it is missing."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    return 0


def rss_bytes() -> int:
    """Current resident set size of this process."""
    return _status_bytes("VmRSS")


def reset_peak_rss() -> None:
    """Reset the kernel's peak-RSS counter (VmHWM) so the next peak is this step's own (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        pass


def peak_rss_bytes() -> int:
    """Peak resident set size of this process since start (or since :func:`reset_peak_rss`)."""
    return _status_bytes("VmHWM")


def measure(step: Callable[[], Any], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median/min seconds of ``step`` over ``repeats`` runs after ``warmup``, and its peak memory above baseline."""
    for _ in range(warmup):
        step()
    baseline = rss_bytes()
    reset_peak_rss()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "peak_mem_mib": max(peak_rss_bytes() - baseline, 0) / 2**20,
    }


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "bf16_kernels": cpu_supports_bf16(),  # native bf16 instructions (AVX512-BF16 / AMX)
        "bf16_preferred": cpu_prefers_bf16(),  # bf16 faster than fp32 here: what precision "auto" goes by
        "cpu_name": cpu_name(),
    }


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    def fmt(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    widths = {c: max(len(c), *(len(fmt(r.get(c, ""))) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(fmt(row.get(c, "")).ljust(widths[c]) for c in columns))


def write_json(path: str | Path | None, payload: dict[str, Any]) -> None:
    if path:
        Path(path).write_text(json.dumps(payload, indent=1) + "\n")
        print(f"wrote {path}")


class CaseFailedError(RuntimeError):
    """A benchmark case's process exited non-zero (out of memory, say); the message is its last stderr line."""


def run_case_in_subprocess(script: str, case: dict[str, Any]) -> dict[str, Any]:
    """Run ``script --case <case as JSON>`` in a fresh Python, so its peak memory is the case's own; the case prints
    its result as JSON on its last stdout line."""
    done = subprocess.run(
        [sys.executable, script, "--case", json.dumps(case)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        raise CaseFailedError(lines[-1] if lines else f"exit status {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- Arithmetic throughput: GFLOP counted by PyTorch, next to this machine's matmul peaks -------------------------


BF16_PRACTICAL_FRACTION = 0.1


@functools.cache
def bf16_skip_reason() -> str | None:
    """Why this run skips its PyTorch bf16 rows, or ``None``: where a bf16 matmul runs at under a tenth of fp32's
    rate. On AVX2 CPUs without AVX-512 PyTorch has no vectorised bf16 kernel: a 512^2 bf16 matmul ran at ~1 GFLOP/s
    against 75 in fp32 (round 8), so one bf16 window of a 3D U-Net takes minutes and no user would run one. Probed
    once per process on a 512^2 product (a fraction of a second); OpenVINO's bf16 hint rows still run (OpenVINO
    falls back to f32 by itself)."""
    rates = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.ones(512, 512, dtype=dtype), torch.ones(512, 512, dtype=dtype)
        torch.mm(a, b)
        start = time.perf_counter()
        torch.mm(a, b)
        rates[dtype] = 2 * 512**3 / 1e9 / (time.perf_counter() - start)
    fraction = rates[torch.bfloat16] / rates[torch.float32]
    if fraction >= BF16_PRACTICAL_FRACTION:
        return None
    return (
        f"this CPU computes bf16 matmuls at {rates[torch.bfloat16]:.1f} GFLOP/s against "
        f"{rates[torch.float32]:.0f} in fp32 (no bf16 vector kernel), so no user would run PyTorch in bf16 here"
    )


def matmul_peaks(threads: int | None = None, n: int = 3072, repeats: int = 3) -> dict[str, Any]:
    """This machine's fp32 and bf16 GFLOP/s on an ``n x n`` square matmul: the physical floor for a row's GFLOP/s.

    Medians of ``repeats`` products after one warm-up each (about 1-2 s on 2 quiet cores; more under load). Measure
    it at the start of the same run as the rows it is compared with, so both see the same machine and load, and store
    the returned dict in the JSON (key ``matmul_peaks``; the benchmarks measure them again at the end of the run,
    ``matmul_peaks_end``, so a change of load during the run shows). ``threads`` sets PyTorch's intra-op threads for the
    measurement only (default: as the process runs, ``torch.get_num_threads()``). Returns ``fp32_gflop_per_s``,
    ``bf16_gflop_per_s`` (medians, used by :func:`add_throughput`), ``*_best_gflop_per_s`` (fastest repeat), and the
    settings (``n``, ``repeats``, ``threads``, ``gflop_per_product``, ``bf16_kernels``). Where bf16 is impractical
    (:func:`bf16_skip_reason`) its peak comes from a 512^2 product (``bf16_n``), which takes seconds instead of minutes.
    """
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        gflop = 2 * n**3 / 1e9
        bf16_n = n if bf16_skip_reason() is None else min(n, 512)
        peaks: dict[str, Any] = {}
        for label, dtype, size in (("fp32", torch.float32, n), ("bf16", torch.bfloat16, bf16_n)):
            generator = torch.Generator().manual_seed(0)
            a = torch.randn(size, size, generator=generator).to(dtype)
            b = torch.randn(size, size, generator=generator).to(dtype)
            torch.mm(a, b)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                torch.mm(a, b)
                times.append(time.perf_counter() - start)
            peaks[f"{label}_gflop_per_s"] = 2 * size**3 / 1e9 / statistics.median(times)
            peaks[f"{label}_best_gflop_per_s"] = 2 * size**3 / 1e9 / min(times)
        return {
            **peaks,
            "n": n,
            "bf16_n": bf16_n,
            "repeats": repeats,
            "threads": torch.get_num_threads(),
            "gflop_per_product": gflop,
            "bf16_kernels": machine()["bf16_kernels"],
        }
    finally:
        torch.set_num_threads(previous)


def _cpu_attention_formulas() -> dict[Any, Callable[..., int]]:
    """FLOP formulas for PyTorch's CPU fused attention, which FlopCounterMode (2.13) does not count (it would add 0):
    the same formulas it uses for the CUDA flash kernel (2 products of N x N x C forward, 5 in backward: the
    scores are recomputed)."""
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

    aten = torch.ops.aten
    mapping: dict[Any, Callable[..., int]] = {}
    forward = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    backward = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    if forward is not None:
        mapping[forward] = lambda query, key, value, *args, out_shape=None, **kwargs: sdpa_flop_count(query, key, value)
    if backward is not None:
        mapping[backward] = lambda grad_out, query, key, value, *args, out_shape=None, **kwargs: (
            sdpa_backward_flop_count(grad_out, query, key, value)
        )
    return mapping


def count_gflop(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> float:
    """GFLOP that ``fn(*args, **kwargs)`` executes, counted by ``torch.utils.flop_counter.FlopCounterMode``.

    It counts the arithmetic of matmuls, convolutions (2 x Cin x Cout x k^d per output voxel, bias not counted) and
    attention, forward and, when ``fn`` calls ``.backward()``, backward too (about 2x the forward for a network whose
    first layer needs no input gradient, 3x in all); element-wise ops, norms, pooling and resampling count 0, so a
    row's GFLOP/s is the rate of its useful arithmetic, comparable with :func:`matmul_peaks`. PyTorch's CPU fused
    attention kernel is counted with the formulas FlopCounterMode uses for the CUDA one. The count does not depend
    on dtype or layout: count once (on fp32, small batch if the network is linear in the batch) and reuse it for every
    row that does the same work. Runs ``fn`` once; its result is discarded.
    """
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False, custom_mapping=_cpu_attention_formulas()) as counter:
        fn(*args, **kwargs)
    return counter.get_total_flops() / 1e9


def network_gflop(network: torch.nn.Module, example: torch.Tensor, train: bool = False) -> float:
    """GFLOP of one forward of ``network`` on ``example`` (``train=False``, under ``no_grad``), or of a training step's
    forward + backward (``train=True``: the backward of the sum of every output tensor, deep-supervision heads in
    lists/dicts included; the loss and the optimiser's update are element-wise and count 0). The network's mode
    (train/eval) is left as it is: set it first where it changes the outputs. ``train=True`` runs a backward on the
    network's parameters (gradients are cleared afterwards; BatchNorm running statistics do see one batch: pass a
    ``copy.deepcopy`` if that matters)."""
    if not train:
        with torch.no_grad():
            return count_gflop(network, example)

    def tensors(output: Any) -> list[torch.Tensor]:
        if isinstance(output, torch.Tensor):
            return [output]
        values = output.values() if isinstance(output, dict) else output
        return [t for value in values for t in tensors(value)]

    def step() -> None:
        sum(t.float().sum() for t in tensors(network(example))).backward()

    gflop = count_gflop(step)
    network.zero_grad(set_to_none=True)
    return gflop


def sliding_windows(
    image_size: Sequence[int], roi_size: Sequence[int] | int, overlap: Sequence[float] | float = 0.25
) -> int:
    """How many windows MONAI's ``sliding_window_inference`` runs over an image of spatial ``image_size``: per axis
    one window if the axis fits in the window (it is padded), else ``ceil((size - roi) / step) + 1`` with
    ``step = int(roi * (1 - overlap))``. A whole volume's GFLOP is the network's per-window GFLOP times this (the
    Gaussian blending is element-wise)."""
    dims = len(image_size)
    rois = [roi_size] * dims if isinstance(roi_size, int) else list(roi_size)
    overlaps = [overlap] * dims if isinstance(overlap, (int, float)) else list(overlap)
    count = 1
    for size, roi, share in zip(image_size, rois, overlaps, strict=True):
        step = max(int(roi * (1 - share)), 1)
        count *= 1 if size <= roi else math.ceil((size - roi) / step) + 1
    return count


def add_throughput(
    row: dict[str, Any],
    gflop: float | None,
    peaks: dict[str, Any] | None,
    seconds: float | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    """Add ``gflop``, ``gflop_per_s``, ``pct_fp32_peak`` and ``pct_bf16_peak`` to ``row`` (in place; also returned).

    ``seconds`` defaults to ``row["median_s"]``. ``gflop`` is the arithmetic the timed step executed (per step, the
    same step the seconds are for: network GFLOP x windows for a whole volume, forward + backward for a training step,
    from :func:`network_gflop` / :func:`count_gflop`). ``peaks`` is :func:`matmul_peaks`'s dict of the same run.
    A row with no arithmetic to speak of (reading a file, an argmax) passes ``gflop=None`` and a ``reason``: its four
    fields are then None and ``gflop_reason`` says why, so a table shows "-" with a reason, not a misleading number.
    """
    if seconds is None:
        seconds = row.get("median_s")
    if gflop is None:
        if not reason:
            raise ValueError("add_throughput: a row without a GFLOP count needs a reason")
        row.update(gflop=None, gflop_per_s=None, pct_fp32_peak=None, pct_bf16_peak=None, gflop_reason=reason)
        return row
    rate = gflop / seconds if seconds else None
    row["gflop"] = gflop
    row["gflop_per_s"] = rate
    for label in ("fp32", "bf16"):
        peak = (peaks or {}).get(f"{label}_gflop_per_s")
        row[f"pct_{label}_peak"] = 100 * rate / peak if rate is not None and peak else None
    return row


def peak_rows(peaks: dict[str, Any], key: str = "case") -> list[dict[str, Any]]:
    """The two matmul peaks as table rows (``{key: "matmul fp32 (the machine's peak)", "median_s", "gflop",
    "gflop_per_s", ...}``), for a table that shows the floor next to its own rows."""
    rows = []
    for label in ("fp32", "bf16"):
        rate = peaks[f"{label}_gflop_per_s"]
        size = peaks.get(f"{label}_n", peaks["n"])
        gflop = 2 * size**3 / 1e9
        row = {key: f"matmul {label} (the machine's peak, {size}^2)", "median_s": gflop / rate}
        rows.append(add_throughput(row, gflop, peaks))
    return rows
