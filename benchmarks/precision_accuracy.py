"""Accuracy of bf16 inference: Dice of the same trained weights evaluated in fp32 and in bf16 autocast.

    .venv/bin/python benchmarks/precision_accuracy.py --json benchmarks/results/precision_accuracy.json

Runs the bundle's evaluate configuration twice (``--precision fp32`` / ``bf16``, channels-last both times) on its
validation cases (default: the demo data) with ``models/model.pt``, and reports the mean and per-class Dice of each
and their difference.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, print_table, write_json


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

    bundle = bundle_path(args.bundle)
    results = {p: evaluate(bundle, p, bundle / "eval" / f"precision_{p}") for p in ("fp32", "bf16")}
    rows = [
        {
            "class": name,
            "dice_fp32": results["fp32"][name],
            "dice_bf16": results["bf16"][name],
            "difference": results["bf16"][name] - results["fp32"][name],
        }
        for name in results["fp32"]
    ]
    print_table(rows, ["class", "dice_fp32", "dice_bf16", "difference"])
    payload = {"benchmark": "precision_accuracy", "bundle": args.bundle, "machine": machine(), "rows": rows}
    write_json(args.json, payload)


if __name__ == "__main__":
    main()
