"""Do the inference runtimes give the PyTorch path's segmentation, and how fast? The shipped 3D Attention U-Net's
trained weights on the demo validation volumes, each runtime through the bundle's own preprocessing and
sliding-window inferer:

    .venv/bin/python benchmarks/runtime_agreement.py --json benchmarks/results/runtime_agreement.json

Rows: PyTorch fp32, PyTorch as the bundle runs it (bf16 weights, BN folded, channels-last: "the PyTorch path"), OpenVINO
with the bf16 hint and in f32, and the INT8 model (``medattn3d export --format openvino-int8``, exported here into a
temporary folder from the same weights, calibrated on ``--calibration-patches`` training patches drawn with
``--calibration-seed``) with the bf16 and f32 hints for its layers left in floating point, and for comparison the same
export with every convolution in int8 (the recipe before the first and head convolutions were kept in float). For each:
argmax agreement with the PyTorch path and with PyTorch fp32 over every voxel of every validation volume (network
space), the largest softmax-probability difference, Dice per class against the truth (MONAI ``DiceMetric``, background
excluded, mean over volumes, and per volume), the voxels whose argmax differs from PyTorch fp32 per volume (all classes,
and those entering or leaving each class), and the median seconds per volume (network + sliding window; preprocessing is
the same for all and left out) with the speed-up over the PyTorch path and over OpenVINO bf16 (median of the per-round
ratios), and GFLOP/s: the network's GFLOP per window (``common.network_gflop``) times the volumes' mean window count,
per second, next to the fp32/bf16 matmul peaks measured at the start of the run. Targets (issue 12): agreement >= 0.999;
INT8 Dice within 0.005 of fp32 per class.

Predictions are compared in this process; each runtime is then timed in a fresh process of its own (medians of
``--repeats`` passes over the volumes after a warm-up), in ``--rounds`` alternating rounds (every runtime once per
round, so a change of load hits a round's runtimes alike), so one runtime's thread pool (OpenVINO's TBB workers,
PyTorch's OpenMP threads) never spins against another's. On a shared machine timings are still noisy: compare the ratios
of one run, not figures across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    add_throughput,
    machine,
    matmul_peaks,
    network_gflop,
    print_table,
    run_case_in_subprocess,
    sliding_windows,
    write_json,
)

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = "PyTorch (bundle path)"
ALL_INT8 = "OpenVINO INT8 (bf16 hint), every convolution in int8"
RUNTIMES = (  # (row name, runtime, precision)
    ("PyTorch fp32", "torch", "fp32"),
    (REFERENCE, "torch", "auto"),
    ("OpenVINO bf16 hint", "openvino", "bf16"),
    ("OpenVINO f32", "openvino", "fp32"),
    ("OpenVINO INT8 (bf16 hint)", "openvino-int8", "bf16"),
    ("OpenVINO INT8 (f32 hint)", "openvino-int8", "fp32"),
    (ALL_INT8, "openvino-int8", "bf16"),
)


def bundle_parts(bundle: Path) -> tuple[Any, list[dict], dict[str, str]]:
    """The parsed ``train.json`` (validation preprocessing and data), the preprocessed validation cases and the class
    names."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "train.json"))
    parser["bundle_root"] = str(bundle)
    parser["device"] = "$torch.device('cpu')"
    preprocessing = parser.get_parsed_content("validate#preprocessing")
    cases = [preprocessing(item) for item in parser.get_parsed_content("validate#dataset#data")]
    names = {str(k): str(v) for k, v in parser.get_parsed_content("class_names").items()}
    return parser, cases, names


def runtime_network(bundle: Path, weights: Path, runtime: str, precision: str, ir_path: Path) -> torch.nn.Module:
    """The bundle's network with ``weights``, prepared for ``runtime`` as ``medattn3d infer`` prepares it."""
    from medattn3d.engine import prepare_for_inference
    from medattn3d.engine.runner import bundle_config
    from medattn3d.training import load_weights

    network = bundle_config(bundle, {"device": "$torch.device('cpu')"}).get_parsed_content("network_def")
    load_weights(network, weights)
    return prepare_for_inference(network, precision, torch.device("cpu"), runtime=runtime, ir_path=ir_path)


def inferer_for(parser: Any, precision: str, runtime: str) -> Any:
    """The bundle's validation sliding-window inferer with ``precision`` (channels-last only for PyTorch)."""
    from medattn3d.engine import PrecisionInferer

    inner = parser.get_parsed_content("validate#inferer").inferer
    return PrecisionInferer(inner, precision, channels_last=runtime == "torch")


def predict(network: Any, inferer: Any, cases: list[dict]) -> list[torch.Tensor]:
    """Logits per case (after one warm-up call: conversion, compilation, first-call allocations)."""
    with torch.inference_mode():
        inferer(cases[0]["image"][None], network)
        return [inferer(case["image"][None], network)[0].float() for case in cases]


def time_case(case: dict[str, Any]) -> dict[str, float]:
    """In a fresh process (``--case``): median seconds per volume of one runtime, ``repeats`` timed passes over the
    validation volumes after one warm-up."""
    import statistics

    from medattn3d.engine import tune_cpu_allocator

    tune_cpu_allocator()
    bundle, weights = Path(case["bundle"]), Path(case["weights"])
    config, cases, _ = bundle_parts(bundle)
    network = runtime_network(bundle, weights, case["runtime"], case["precision"], Path(case["ir"]))
    inferer = inferer_for(config, case["precision"], case["runtime"])
    predict(network, inferer, cases[:1])
    passes = []
    with torch.inference_mode():
        for _ in range(case["repeats"]):
            start = time.perf_counter()
            for item in cases:
                inferer(item["image"][None], network)
            passes.append((time.perf_counter() - start) / len(cases))
    return {"median_s_per_volume": statistics.median(passes), "min_s_per_volume": min(passes)}


def dice_per_class(logits: list[torch.Tensor], cases: list[dict], num_classes: int) -> list[float]:
    """Mean Dice over the cases per foreground class (MONAI ``DiceMetric``, as the bundle's validation computes)."""
    return [float(v) for v in dice_per_volume(logits, cases, num_classes).nanmean(0)]


def dice_per_volume(logits: list[torch.Tensor], cases: list[dict], num_classes: int) -> torch.Tensor:
    """Dice per volume and foreground class, ``(volumes, classes - 1)`` (MONAI ``DiceMetric``; NaN where a class is
    absent from both truth and prediction, left out of the mean as ``DiceMetric`` does)."""
    from monai.metrics import DiceMetric
    from monai.networks.utils import one_hot

    metric = DiceMetric(include_background=False, reduction="none")
    for out, case in zip(logits, cases, strict=True):
        pred = one_hot(out.argmax(0, keepdim=True)[None], num_classes)
        metric(pred, one_hot(case["label"][None].long(), num_classes))
    return metric.aggregate()


def flips(logits: list[torch.Tensor], reference: list[torch.Tensor], num_classes: int) -> dict[str, list[int]]:
    """Per volume: voxels whose argmax differs from ``reference`` (``"all"``), and per class those that enter or leave
    it (what moves that class's Dice)."""
    labels = [(a.argmax(0), b.argmax(0)) for a, b in zip(logits, reference, strict=True)]
    counts = {"all": [int((a != b).sum()) for a, b in labels]}
    for c in range(1, num_classes):
        counts[str(c)] = [int(((a == c) != (b == c)).sum()) for a, b in labels]
    return counts


def gflop_per_volume(bundle: Path, parser: Any, cases: list[dict]) -> tuple[float, list[int]]:
    """Mean GFLOP per validation volume of the bundle's network under its validation sliding window (network GFLOP
    per window, counted on the fp32 network, times each volume's window count), and the window counts."""
    from medattn3d.engine.runner import bundle_config

    inner = parser.get_parsed_content("validate#inferer").inferer
    network = bundle_config(bundle, {"device": "$torch.device('cpu')"}).get_parsed_content("network_def").eval()
    channels = cases[0]["image"].shape[0]
    roi = list(inner.roi_size)
    per_window = network_gflop(network, torch.zeros(1, channels, *roi))
    windows = [sliding_windows(c["image"].shape[1:], roi, inner.overlap) for c in cases]
    return per_window * sum(windows) / len(windows), windows


def compare(logits: list[torch.Tensor], reference: list[torch.Tensor]) -> dict[str, float]:
    """Argmax agreement over all voxels and the largest softmax-probability difference."""
    same = sum(int((a.argmax(0) == b.argmax(0)).sum()) for a, b in zip(logits, reference, strict=True))
    total = sum(a[0].numel() for a in logits)
    largest = max(float((a.softmax(0) - b.softmax(0)).abs().max()) for a, b in zip(logits, reference, strict=True))
    return {"agreement": same / total, "max_prob_diff": largest, "voxels": total}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default=str(ROOT / "bundles" / "attention_unet_3d"))
    parser.add_argument("--calibration-patches", type=int, default=32)
    parser.add_argument("--calibration-seed", type=int, default=0, help="seed of the calibration patches' draw")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes over the volumes per runtime and round")
    parser.add_argument("--rounds", type=int, default=1, help="alternating timing rounds, every runtime once per round")
    parser.add_argument("--ir", help="an existing INT8 model_int8.xml of these weights (default: export one here)")
    parser.add_argument("--json")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(time_case(json.loads(args.case))))
        return 0

    from medattn3d.engine import tune_cpu_allocator
    from medattn3d.engine.quantize import export_int8

    bundle = Path(args.bundle).resolve()
    weights = bundle / "models" / "model.pt"
    if not weights.is_file():
        print(
            f"error: {weights}: no trained weights; run `medattn3d demo` (or `medattn3d train`) first", file=sys.stderr
        )
        return 2
    load_start = os.getloadavg()
    peaks = matmul_peaks()
    tune_cpu_allocator()
    config, cases, names = bundle_parts(bundle)
    num_classes = len(names)
    volume_gflop, windows = gflop_per_volume(bundle, config, cases)
    with tempfile.TemporaryDirectory() as tmp:
        export_s = None
        ir_path = Path(args.ir) if args.ir else Path(tmp) / "model_int8.xml"
        all_int8_path = Path(tmp) / "all_int8" / "model_int8.xml"
        seed = args.calibration_seed
        if not args.ir:
            start = time.perf_counter()
            export_int8(bundle, weights, ir_path, args.calibration_patches, seed=seed)
            export_s = time.perf_counter() - start
        all_int8_path.parent.mkdir()
        export_int8(bundle, weights, all_int8_path, args.calibration_patches, seed=seed, keep_float=())
        irs = {name: str(all_int8_path if name == ALL_INT8 else ir_path) for name, _, _ in RUNTIMES}
        outputs, runs, rows = {}, {}, []
        for name, runtime, precision in RUNTIMES:
            runs[name] = (
                runtime_network(bundle, weights, runtime, precision, Path(irs[name])),
                inferer_for(config, precision, runtime),
            )
            outputs[name] = predict(*runs[name], cases)
            dice = dice_per_class(outputs[name], cases, num_classes)
            per_volume = dice_per_volume(outputs[name], cases, num_classes).T.tolist()
            rows.append(
                {
                    "runtime": name,
                    "dice": dict(zip(list(names.values())[1:], dice, strict=True)),
                    "dice_per_volume": dict(zip(list(names.values())[1:], per_volume, strict=True)),
                }
            )
            print(f"{name}: mean Dice {sum(dice) / len(dice):.4f}", flush=True)
        del runs  # free the networks (and their runtimes' threads) before timing in fresh processes
        timings: dict[str, list[float]] = {row["runtime"]: [] for row in rows}
        for round_ in range(args.rounds):
            for row, (_, runtime, precision) in zip(rows, RUNTIMES, strict=True):
                case = {"bundle": str(bundle), "weights": str(weights), "runtime": runtime, "precision": precision}
                case = {**case, "ir": irs[row["runtime"]], "repeats": args.repeats}
                timings[row["runtime"]].append(run_case_in_subprocess(__file__, case)["median_s_per_volume"])
                print(f"round {round_ + 1}, {row['runtime']}: {timings[row['runtime']][-1]:.3f} s per volume")
        for row in rows:
            row["round_s_per_volume"] = timings[row["runtime"]]
            row["median_s_per_volume"] = statistics.median(timings[row["runtime"]])
    reference_s = next(r["median_s_per_volume"] for r in rows if r["runtime"] == REFERENCE)
    openvino_rounds = timings["OpenVINO bf16 hint"]
    fp32 = next(r for r in rows if r["runtime"] == "PyTorch fp32")
    for row in rows:
        vs_path, vs_fp32 = (
            compare(outputs[row["runtime"]], outputs[REFERENCE]),
            compare(outputs[row["runtime"]], outputs["PyTorch fp32"]),
        )
        row.update(
            {
                "agreement_vs_pytorch_path": vs_path["agreement"],
                "max_prob_diff_vs_pytorch_path": vs_path["max_prob_diff"],
                "agreement_vs_fp32": vs_fp32["agreement"],
                "max_prob_diff_vs_fp32": vs_fp32["max_prob_diff"],
                "speedup_vs_pytorch_path": reference_s / row["median_s_per_volume"],
                "speedup_vs_openvino_bf16": statistics.median(
                    a / b for a, b in zip(openvino_rounds, row["round_s_per_volume"], strict=True)
                ),
                "dice_delta_vs_fp32": {c: row["dice"][c] - fp32["dice"][c] for c in row["dice"]},
                "max_dice_delta_vs_fp32": max(abs(row["dice"][c] - fp32["dice"][c]) for c in row["dice"]),
                "flips_vs_fp32_per_volume": {
                    names.get(k, k): v
                    for k, v in flips(outputs[row["runtime"]], outputs["PyTorch fp32"], num_classes).items()
                },
                "mean_dice": sum(row["dice"].values()) / len(row["dice"]),
            }
        )
        add_throughput(row, volume_gflop, peaks, seconds=row["median_s_per_volume"])
    print_table(
        rows,
        [
            "runtime",
            "median_s_per_volume",
            "gflop_per_s",
            "speedup_vs_pytorch_path",
            "speedup_vs_openvino_bf16",
            "agreement_vs_pytorch_path",
            "max_prob_diff_vs_pytorch_path",
            "mean_dice",
            "max_dice_delta_vs_fp32",
        ],
    )
    int8 = [r for r in rows if "INT8" in r["runtime"]]
    targets = {
        "agreement_at_least_0.999": {r["runtime"]: r["agreement_vs_pytorch_path"] >= 0.999 for r in rows},
        "int8_dice_within_0.005_of_fp32": {r["runtime"]: r["max_dice_delta_vs_fp32"] <= 0.005 for r in int8},
    }
    print(f"targets: {targets}")
    write_json(
        args.json,
        {
            "benchmark": "runtime_agreement",
            "machine": machine(),
            "matmul_peaks": peaks,
            "matmul_peaks_end": matmul_peaks(),
            "bundle": str(bundle),
            "weights_metric": json.loads(metric.read_text())
            if (metric := weights.with_name("model_metric.json")).is_file()
            else None,
            "weights_mtime": time.strftime("%Y-%m-%d %H:%M", time.localtime(weights.stat().st_mtime)),
            "validation_volumes": [Path(str(c["image"].meta.get("filename_or_obj", ""))).name for c in cases],
            "voxels": sum(c["image"][0].numel() for c in cases),
            "shapes": [list(c["image"].shape[1:]) for c in cases],
            "windows": windows,
            "gflop_per_volume": volume_gflop,
            "int8_export_s": export_s,
            "calibration_patches": args.calibration_patches,
            "calibration_seed": args.calibration_seed,
            "truth_voxels_per_volume": {
                names[str(c)]: [int((case["label"] == c).sum()) for case in cases] for c in range(1, num_classes)
            },
            "repeats": args.repeats,
            "rounds": args.rounds,
            "load_start": load_start,
            "load_end": os.getloadavg(),
            "rows": rows,
            "targets": targets,
            "note": "each runtime timed in its own process; shared machine, timings noisy: compare ratios",
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
