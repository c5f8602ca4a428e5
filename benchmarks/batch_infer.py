"""Batch inference: a folder of CT volumes through one ``medattn3d infer`` vs one ``medattn3d infer`` per volume.

    .venv/bin/python benchmarks/batch_infer.py --json benchmarks/results/batch_infer.json [--cases 20]

The volumes (default 20 of 256 x 256 x 64 voxels, 0.8 x 0.8 x 2.5 mm, int16 with a body and two organs) are written
to a temporary folder; the shipped ``attention_unet_3d`` bundle runs with random weights saved by this script (the
speed of a forward pass does not depend on the weight values). Both ways run the real console command in fresh
processes on the CPU, so the single runs pay what a user's loop pays each time: Python and torch start-up, MONAI's
config parsing, building the network and preparing its weights. The per-run fixed cost is ``(single - batch) /
(cases - 1)`` and the per-case cost of the batch run ``batch / cases``.

GFLOP per case: the bundle network's GFLOP per window (``common.network_gflop``) times the windows its sliding
window runs over a case after the bundle's own preprocessing (``common.sliding_windows``); each row's GFLOP/s is
that arithmetic over the row's wall time (process start-up, I/O and all, so far below the network's own rate), next
to the fp32/bf16 matmul peaks measured at the start of the run (``matmul_peaks`` in the JSON).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_throughput, machine, matmul_peaks, network_gflop, print_table, sliding_windows, write_json

CLI = [sys.executable, "-m", "medattn3d.cli"]


def write_cases(folder: Path, cases: int, shape: tuple[int, int, int]) -> list[Path]:
    """``cases`` CT-like int16 volumes: air, a body ellipse of soft tissue, two brighter blobs, noise."""
    rng = np.random.default_rng(0)
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, s) for s in shape), indexing="ij")
    body = (x / 0.8) ** 2 + (y / 0.6) ** 2 < 1
    paths = []
    for index in range(cases):
        volume = np.full(shape, -1000.0, np.float32)
        volume[body] = 40
        volume[((x - 0.3) / 0.25) ** 2 + (y / 0.2) ** 2 + (z / 0.6) ** 2 < 1] = 110
        volume[((x + 0.3) / 0.15) ** 2 + ((y - 0.1) / 0.15) ** 2 + (z / 0.4) ** 2 < 1] = 160
        volume += rng.normal(0, 15, shape)
        affine = np.diag([0.8, 0.8, 2.5, 1.0])
        path = folder / f"ct_{index:02d}.nii.gz"
        nib.save(nib.Nifti1Image(volume.astype(np.int16), affine), str(path))
        paths.append(path)
    return paths


def inference_config() -> Any:
    """The shipped 3D Attention U-Net's parsed ``inference.json`` (rooted at the bundle)."""
    from monai.bundle import ConfigParser

    from medattn3d.bundles import resolve_bundle

    parser = ConfigParser()
    parser.read_config(str(resolve_bundle("attention_unet_3d") / "configs" / "inference.json"))
    parser["bundle_root"] = str(resolve_bundle("attention_unet_3d"))
    return parser


def random_weights(path: Path) -> Path:
    """Random weights for the shipped 3D Attention U-Net (its own config builds the network)."""
    torch.manual_seed(0)
    torch.save(inference_config().get_parsed_content("network_def").state_dict(), path)
    return path


def gflop_per_case(case: Path) -> tuple[float, int, list[int]]:
    """GFLOP of the bundle's sliding-window inference on ``case`` (per-window network GFLOP x windows over the case
    as the bundle's preprocessing resamples it), the window count and the resampled spatial shape."""
    parser = inference_config()
    spatial = list(parser.get_parsed_content("preprocessing")({"image": str(case)})["image"].shape[1:])
    roi, overlap = parser.get_parsed_content("roi_size"), parser.get_parsed_content("overlap")
    network = parser.get_parsed_content("network_def").eval()
    per_window = network_gflop(network, torch.zeros(1, parser.get_parsed_content("in_channels"), *roi))
    windows = sliding_windows(spatial, roi, overlap)
    return per_window * windows, windows, spatial


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--shape", type=int, nargs=3, default=(256, 256, 64))
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    peaks = matmul_peaks()
    root = Path(tempfile.mkdtemp(prefix="medattn3d-batch-"))
    try:
        inputs = root / "in"
        inputs.mkdir()
        paths = write_cases(inputs, args.cases, tuple(args.shape))
        weights = random_weights(root / "model.pt")
        case_gflop, windows, spatial = gflop_per_case(paths[0])  # every case has the same shape
        common = ["--bundle", "attention_unet_3d", "--checkpoint", str(weights), "--device", "cpu", "-q"]
        batch = timed([*CLI, "infer", "-i", str(inputs), "-o", str(root / "batch"), *common])
        singles = [timed([*CLI, "infer", "-i", str(p), "-o", str(root / "single"), *common]) for p in paths]
        written = len(list((root / "batch").glob("*_seg.nii.gz"))), len(list((root / "single").glob("*_seg.nii.gz")))
        assert written == (args.cases, args.cases), f"expected {args.cases} outputs each way, got {written}"
    finally:
        shutil.rmtree(root, ignore_errors=True)
    single = sum(singles)
    rows = [
        {"way": f"one run over {args.cases} volumes", "total_s": batch, "per_case_s": batch / args.cases},
        {"way": f"{args.cases} single runs", "total_s": single, "per_case_s": single / args.cases},
    ]
    for row in rows:
        add_throughput(row, case_gflop * args.cases, peaks, seconds=row["total_s"])
    print_table(rows, ["way", "total_s", "per_case_s", "gflop", "gflop_per_s", "pct_bf16_peak"])
    fixed = (single - batch) / max(args.cases - 1, 1)
    print(f"batch / single: {batch / single:.2f}; fixed cost per run: {fixed:.1f} s")
    write_json(
        args.json,
        {
            "benchmark": "batch_infer",
            "machine": machine(),
            "matmul_peaks": peaks,
            "matmul_peaks_end": matmul_peaks(),
            "cases": args.cases,
            "shape": list(args.shape),
            "spacing_mm": [0.8, 0.8, 2.5],
            "bundle": "attention_unet_3d (random weights), device cpu, precision auto",
            "batch_total_s": round(batch, 2),
            "single_total_s": round(single, 2),
            "single_runs_s": [round(t, 2) for t in singles],
            "batch_per_case_s": round(batch / args.cases, 3),
            "fixed_cost_per_run_s": round(fixed, 2),
            "batch_over_single": round(batch / single, 3),
            "network_space_shape": spatial,
            "windows_per_case": windows,
            "gflop_per_case": case_gflop,
            "rows": rows,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
