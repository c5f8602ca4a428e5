"""Dataset fingerprint throughput and memory: 20 generated 512 x 512 x 100 CT cases, 1 vs 2 worker processes.

    .venv/bin/python benchmarks/fingerprint.py --json benchmarks/results/fingerprint.json [--cases 20] [--keep DIR]

Each case is an int16 CT (``.nii.gz``, air outside a body, a spleen with N(110, 15) HU) with a uint8 label, written
to a temporary folder (not the repository). Each configuration runs ``fingerprint_dataset`` in a fresh Python
process; a sampler thread there reads every descendant process's peak resident memory (``VmHWM`` in
``/proc/<pid>/status``) ten times a second, so the workers' peaks are measured from outside (they are grandchildren
under a forkserver, which ``getrusage(RUSAGE_CHILDREN)`` does not see). A worker's peak is compared with the
resident size of that worker when first seen, within 0.1 s of its fork (with 1 worker: this process before
fingerprinting) and with the size of one volume. Imports are done before timing (a planner has made them).
A last run repeats 2 workers with the cache filled: a re-plan of unchanged data.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, peak_rss_bytes, print_table, reset_peak_rss, rss_bytes, run_case_in_subprocess, write_json

SHAPE = (512, 512, 100)
SPACING = (0.8, 0.8, 2.5)


def make_case(path_image: Path, path_label: Path, seed: int) -> None:
    """One synthetic CT case and its label (spleen ellipsoid) at ``SPACING``."""
    rng = np.random.default_rng(seed)
    x, y, z = (np.arange(n, dtype=np.float32) for n in SHAPE)
    body = ((x[:, None] - 256) / 230) ** 2 + ((y[None, :] - 256) / 180) ** 2 <= 1.0
    image = np.full(SHAPE, -1000, np.int16)
    tissue = rng.normal(40, 20, size=(int(body.sum()), SHAPE[2])).astype(np.int16)
    image[body] = tissue
    cx, cy, cz = 150 + seed % 7, 300, 50
    spleen = ((x[:, None, None] - cx) / 40) ** 2 + ((y[None, :, None] - cy) / 30) ** 2 + (
        (z[None, None, :] - cz) / 15
    ) ** 2 <= 1.0
    image[spleen] = rng.normal(110, 15, size=int(spleen.sum())).astype(np.int16)
    affine = np.diag([*SPACING, 1.0])
    nib.save(nib.Nifti1Image(image, affine), str(path_image))
    nib.save(nib.Nifti1Image(spleen.astype(np.uint8), affine), str(path_label))


def make_dataset(root: Path, cases: int) -> list[dict[str, str]]:
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(exist_ok=True)
    datalist = []
    for index in range(cases):
        image, label = root / "imagesTr" / f"ct_{index:03d}.nii.gz", root / "labelsTr" / f"ct_{index:03d}.nii.gz"
        if not (image.is_file() and label.is_file()):
            make_case(image, label, index)
        datalist.append({"image": str(image), "label": str(label)})
    return datalist


def _status(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _processes() -> dict[int, tuple[int, str]]:
    """Every process's parent pid and command line."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parent = int(stat.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                    command = cmdline.read().replace(b"\0", b" ").decode(errors="replace")
                table[int(entry)] = (parent, command)
            except (OSError, IndexError, ValueError):
                continue
    return table


class Sampler(threading.Thread):
    """Ten times a second, records the resident size (VmRSS) of the forkserver this process started (idle, every
    worker starts as its fork) and the peak RSS (VmHWM) of each worker forked from it."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.server_rss = 0
        self.worker_peaks: dict[int, int] = {}
        self.worker_start: dict[int, int] = {}  # first VmRSS seen: within 0.1 s of the fork, before a case is read
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            table = _processes()
            servers = {p for p, (parent, cmd) in table.items() if parent == os.getpid() and "forkserver" in cmd}
            for pid in servers:
                self.server_rss = max(self.server_rss, _status(pid, "VmRSS"))  # idle: imports done, no case
            for pid, (parent, _) in table.items():
                if parent in servers:
                    self.worker_peaks[pid] = max(self.worker_peaks.get(pid, 0), _status(pid, "VmHWM"))
                    self.worker_start.setdefault(pid, _status(pid, "VmRSS"))
            time.sleep(0.1)


def run_case(case: dict) -> dict:
    """One configuration, in this (fresh) process: time ``fingerprint_dataset`` and measure memory."""
    import medattn3d.data.loading  # imported by any planner before it fingerprints
    import medattn3d.outputs  # noqa: F401
    from medattn3d.planning import fingerprint

    cases = json.loads(Path(case["datalist"]).read_text(encoding="utf-8"))
    cache = Path(case["cache"]) if case.get("cache") else None
    workers = case["workers"]
    sampler = Sampler()
    sampler.start()
    before = rss_bytes()
    reset_peak_rss()
    start = time.perf_counter()
    result = fingerprint.fingerprint_dataset(cases, cache, workers=workers, progress=False)
    seconds = time.perf_counter() - start
    sampler.stop.set()
    sampler.join()
    in_process = workers == 1 or not sampler.worker_peaks
    if in_process:
        idle, peak = before, peak_rss_bytes()
    else:  # the worker that grew most above its own start
        worst = max(sampler.worker_peaks, key=lambda pid: sampler.worker_peaks[pid] - sampler.worker_start[pid])
        idle, peak = sampler.worker_start[worst], sampler.worker_peaks[worst]
    return {
        "workers": workers,
        "cached": bool(case.get("cached")),
        "load_average_1min": os.getloadavg()[0],  # other jobs on the machine: above the core count = contention
        "seconds": seconds,
        "cases_per_s": len(cases) / seconds,
        "processes_sampled": 1 if in_process else len(sampler.worker_peaks),
        "idle_rss_mib": idle / 2**20,
        "peak_rss_mib": peak / 2**20,
        "peak_above_idle_mib": (peak - idle) / 2**20,
        "intensity_mean": result["intensities"][0]["mean"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--keep", help="generate into (and reuse) this folder instead of a temporary one")
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="medattn3d-fingerprint-"))
    try:
        start = time.perf_counter()
        datalist = make_dataset(root, args.cases)
        print(f"dataset: {args.cases} cases in {root} ({time.perf_counter() - start:.0f} s to generate)")
        (root / "datalist.json").write_text(json.dumps(datalist))
        cache = root / "fingerprint_cache.json"
        cache.unlink(missing_ok=True)
        script = str(Path(__file__).resolve())
        rows = []
        for workers in (1, 2):
            rows.append(run_case_in_subprocess(script, {"datalist": str(root / "datalist.json"), "workers": workers}))
        run_case_in_subprocess(script, {"datalist": str(root / "datalist.json"), "workers": 2, "cache": str(cache)})
        cached = {"datalist": str(root / "datalist.json"), "workers": 2, "cache": str(cache), "cached": True}
        rows.append(run_case_in_subprocess(script, cached))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    volume_int16 = np.prod(SHAPE) * 2 / 2**20
    for row in rows:
        row["peak_above_idle_in_float32_volumes"] = row["peak_above_idle_mib"] / (2 * volume_int16)
    print_table(
        rows,
        ["workers", "cached", "seconds", "cases_per_s", "idle_rss_mib", "peak_rss_mib", "peak_above_idle_mib",
         "peak_above_idle_in_float32_volumes"],
    )  # fmt: skip
    speedup = rows[0]["seconds"] / rows[1]["seconds"]
    print(f"2 workers vs 1: {speedup:.2f}x; cached re-run: {rows[2]['seconds']:.2f} s")
    write_json(
        args.json,
        {
            "benchmark": "fingerprint",
            "cases": args.cases,
            "shape": list(SHAPE),
            "volume_mib": {"int16_as_stored": volume_int16, "float32": 2 * volume_int16},
            "rows": rows,
            "speedup_2_workers": speedup,
            "machine": machine(),
            "note": "2 CPU cores shared with other jobs while measured (see load_average_1min): timings are noisy; "
            "the 2-worker time includes starting the forkserver (importing torch and MONAI)",
        },
    )


if __name__ == "__main__":
    main()
