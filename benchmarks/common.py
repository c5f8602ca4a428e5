"""Shared benchmark helpers: medians of repeated timings, peak memory of a step, tables and JSON output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


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


def machine() -> dict[str, Any]:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "bf16_kernels": bool(getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)()),
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
