"""Accuracy of bf16 inference: Dice of the same trained weights evaluated in fp32 and in bf16 autocast.

    .venv/bin/python benchmarks/precision_accuracy.py --json benchmarks/results/precision_accuracy.json

Runs the bundle's evaluate configuration twice (``--precision fp32`` / ``bf16``, channels-last both times) on its
validation cases (default: the demo data) with ``models/model.pt``, and reports the mean and per-class Dice of each
and their difference. The Dice rows are accuracy, not timings (``gflop: None`` with a reason); the two evaluation
runs are timed whole, after an untimed warm-up evaluation (``runs`` in the JSON: wall seconds of ``run_bundle``
including its config parsing and data loading) with the GFLOP of their sliding-window inference (network GFLOP per
window x the validation volumes' windows) and GFLOP/s next to the fp32/bf16 matmul peaks measured at the start
(``matmul_peaks``).
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_throughput, machine, matmul_peaks, print_table, write_json
from runtime_agreement import bundle_parts, gflop_per_volume


def evaluate(bundle: Path, precision: str, output_dir: Path) -> dict[str, float]:
    from medattn3d.bundles import run_bundle

    run_bundle(bundle, ["train.json", "evaluate.json"], precision=precision, output_dir=str(output_dir))
    with open(output_dir / "val_mean_dice_summary.csv") as stream:
        return {row[0]: float(row[1]) for row in csv.reader(stream) if row and row[0] != "class"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default="attention_unet_3d")
    parser.add_argument("--json")
    args = parser.parse_args()
    from medattn3d.bundles import bundle_path

    peaks = matmul_peaks()
    bundle = bundle_path(args.bundle)
    config, cases, _ = bundle_parts(bundle)
    volume_gflop, windows = gflop_per_volume(bundle, config, cases)
    results, runs = {}, []
    evaluate(
        bundle, "bf16", bundle / "eval" / "precision_warmup"
    )  # first-run costs (imports, caches) out of the timings
    for precision in ("fp32", "bf16"):
        start = time.perf_counter()
        results[precision] = evaluate(bundle, precision, bundle / "eval" / f"precision_{precision}")
        run = {"precision": precision, "seconds": time.perf_counter() - start, "volumes": len(cases)}
        runs.append(add_throughput(run, volume_gflop * len(cases), peaks, seconds=run["seconds"]))
    rows = [
        {
            "class": name,
            "dice_fp32": results["fp32"][name],
            "dice_bf16": results["bf16"][name],
            "difference": results["bf16"][name] - results["fp32"][name],
        }
        for name in results["fp32"]
    ]
    for row in rows:
        add_throughput(row, None, peaks, reason="accuracy (Dice), not a timing; see runs for the evaluations' GFLOP/s")
    print_table(rows, ["class", "dice_fp32", "dice_bf16", "difference"])
    print_table(runs, ["precision", "seconds", "gflop", "gflop_per_s", "pct_bf16_peak"])
    payload = {"benchmark": "precision_accuracy", "bundle": args.bundle, "machine": machine(), "matmul_peaks": peaks}
    payload |= {"matmul_peaks_end": matmul_peaks(), "windows": windows, "rows": rows, "runs": runs}
    write_json(args.json, payload)


if __name__ == "__main__":
    main()
