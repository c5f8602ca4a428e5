"""INT8 speed on one window: the 3D AttentionUNet of benchmarks/runtimes.py (1 x 1 x 96^3, widths 16..256, 4 classes)
as the bundles run it in PyTorch and through OpenVINO (precision auto: bf16 where it beats fp32, else fp32),
through OpenVINO with each hint, and as the INT8 model NNCF makes (``medattn3d.engine.quantize``, the code behind
``medattn3d export --format openvino-int8``: its default recipe, which keeps the first convolution in floating
point, and for comparison the same model with every convolution in int8), with this machine's fp32 and bf16 matmul
peaks measured in the same run:

    .venv/bin/python benchmarks/int8.py --rounds 3 --json benchmarks/results/int8.json

The INT8 models are quantized once here (random weights, calibrated on a few random windows: speed does not depend
on the calibration data) and saved to temporary IRs. Cases are PAIRED: each of ``--rounds`` rounds runs every case
once, in turn, each in a fresh process (medians of ``--repeats`` forwards), so a change of load on a shared machine
hits all cases of a round alike; a row reports the median over rounds and its per-round ratios to OpenVINO as the
bundles run it (what a user would run instead of INT8) and to the PyTorch path. The load (``os.getloadavg``) is
recorded at the start and the end. GFLOP is counted once on the PyTorch network (``common.network_gflop``) and used
for every row, and the fp32/bf16 matmul peaks (``common.matmul_peaks``) are measured first in this process, so
GFLOP/s of the INT8 rows are effective rates of the same arithmetic done in int8 (no int8 matmul peak is measured:
PyTorch's CPU int8 matmul does not reach the hardware's). Accuracy of INT8 on trained weights:
benchmarks/runtime_agreement.py.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    CaseFailedError,
    add_throughput,
    machine,
    matmul_peaks,
    measure,
    network_gflop,
    peak_rows,
    print_table,
    run_case_in_subprocess,
    write_json,
)
from runtimes import SHAPE, auto_precision, ours, window

AUTO = auto_precision()
REFERENCE = f"ours, PyTorch (bundle path: precision auto = {AUTO}, BN folded, channels-last)"
OPENVINO_AUTO = f"ours, OpenVINO, precision auto = {AUTO} (the bundles' runtime auto)"
ALL_INT8 = "every convolution in int8"
CASES = (
    REFERENCE,
    OPENVINO_AUTO,
    "ours, OpenVINO bf16 hint",
    "ours, OpenVINO f32",
    f"ours, OpenVINO INT8 (precision auto = {AUTO})",
    f"ours, OpenVINO INT8 (precision auto = {AUTO}), {ALL_INT8}",
)


def export_ir(folder: Path, size: int, patches: int = 4, keep_float: tuple[str, ...] | None = None) -> Path:
    """The benchmark network quantized to INT8 on ``patches`` random windows, saved as ``folder/model_int8.xml``;
    ``keep_float`` as in :func:`medattn3d.engine.quantize.quantize_network` (``None``: its default recipe)."""
    from medattn3d.engine.quantize import quantize_network, save_ir

    generator = torch.Generator().manual_seed(0)
    windows = list(torch.randn(patches, *window(size)[1:], generator=generator))
    options = {} if keep_float is None else {"keep_float": keep_float}
    return save_ir(quantize_network(ours(), windows, **options), folder / "model_int8.xml")


def run_case(case: dict) -> dict:
    from monai.inferers import SimpleInferer

    from medattn3d.engine import PrecisionInferer, prepare_for_inference, tune_cpu_allocator

    name, repeats = case["name"], case["repeats"]
    tune_cpu_allocator()
    x = torch.randn(window(case["size"]))
    runtime = "openvino-int8" if "INT8" in name else "openvino" if "OpenVINO" in name else "torch"
    precision = "auto" if "precision auto" in name else "fp32" if "f32" in name else "bf16"
    ir = case["ir_all_int8"] if ALL_INT8 in name else case["ir"]
    network = prepare_for_inference(ours(), precision, runtime=runtime, ir_path=ir)
    inferer = PrecisionInferer(SimpleInferer(), precision, channels_last=runtime == "torch")
    with torch.no_grad():
        return measure(lambda: inferer(x, network), repeats=repeats, warmup=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=5, help="timed forwards per case and round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds, every case once per round")
    parser.add_argument("--size", type=int, default=SHAPE[-1], help="window edge (default 96; small for a quick check)")
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return
    load_start = os.getloadavg()
    peaks = matmul_peaks()
    gflop = network_gflop(ours(), torch.zeros(window(args.size)))
    rows = peak_rows(peaks)
    rounds: dict[str, list[float]] = {name: [] for name in CASES}
    errors: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "all").mkdir()
        ir = str(export_ir(Path(tmp), args.size))
        ir_all_int8 = str(export_ir(Path(tmp) / "all", args.size, keep_float=()))
        for round_ in range(args.rounds):
            for name in CASES:
                if name in errors:
                    continue
                case = {"name": name, "repeats": args.repeats, "ir": ir, "ir_all_int8": ir_all_int8}
                try:
                    rounds[name].append(run_case_in_subprocess(__file__, {**case, "size": args.size})["median_s"])
                except CaseFailedError as err:
                    errors[name] = str(err)
            print(f"round {round_ + 1}: " + ", ".join(f"{t[-1]:.3f}" for t in rounds.values() if t), flush=True)
    for name in CASES:
        if name in errors:
            rows.append({"case": name, "error": errors[name]})
            continue
        row = {"case": name, "median_s": statistics.median(rounds[name]), "round_s": rounds[name]}
        for key, other in (("openvino_auto", OPENVINO_AUTO), ("bundle_path", REFERENCE)):
            if other not in errors:
                ratios = [a / b for a, b in zip(rounds[other], rounds[name], strict=True)]
                row[f"speed_vs_{key}"] = statistics.median(ratios)
                row[f"round_ratios_vs_{key}"] = [round(r, 3) for r in ratios]
        rows.append(add_throughput(row, gflop, peaks))
    columns = ["case", "median_s", "gflop", "gflop_per_s", "pct_bf16_peak", "speed_vs_openvino_auto"]
    print_table(rows, [*columns, "round_ratios_vs_openvino_auto", "speed_vs_bundle_path"])
    payload = {
        "benchmark": "int8",
        "machine": machine(),
        "matmul_peaks": peaks,
        "matmul_peaks_end": matmul_peaks(),
        "load_start": load_start,
        "load_end": os.getloadavg(),
        "shape": window(args.size),
        "rounds": args.rounds,
        "repeats": args.repeats,
        "note_ratios": "speed_vs_*: median of the per-round ratios (cases alternate within each round)",
        "rows": rows,
    }
    write_json(args.json, {**payload, "note": "shared machine: noisy"})


if __name__ == "__main__":
    main()
