"""INT8 speed on one window: the 3D AttentionUNet of benchmarks/runtimes.py (1 x 1 x 96^3, widths 16..256, 4
classes) as the bundles run it in PyTorch, through OpenVINO (bf16 hint, f32) and as the INT8 model NNCF makes
(``medattn3d.engine.quantize``, the code behind ``medattn3d export --format openvino-int8``), with this machine's
fp32 and bf16 matmul peaks measured in the same run:

    .venv/bin/python benchmarks/int8.py --json benchmarks/results/int8.json

The INT8 model is quantized once here (random weights, calibrated on a few random windows: speed does not depend on
the calibration data) and saved to a temporary IR; each case then runs in a fresh process (medians of repeated
forwards). GFLOP is counted once on the PyTorch network (``common.network_gflop``) and used for every row, and the
fp32/bf16 matmul peaks (``common.matmul_peaks``) are measured first in this process, so GFLOP/s of the
INT8 rows are effective rates of the same arithmetic done in int8 (no int8 matmul peak is measured: PyTorch's CPU
int8 matmul does not reach the hardware's). Accuracy of INT8 on trained weights: benchmarks/runtime_agreement.py.
"""

from __future__ import annotations

import argparse
import json
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
from runtimes import SHAPE, ours, window

REFERENCE = "ours, PyTorch (bundle path: bf16 weights, BN folded, channels-last)"
CASES = (
    REFERENCE,
    "ours, OpenVINO bf16 hint",
    "ours, OpenVINO f32",
    "ours, OpenVINO INT8 (bf16 hint)",
    "ours, OpenVINO INT8 (f32 hint)",
)


def export_ir(folder: Path, size: int, patches: int = 4) -> Path:
    """The benchmark network quantized to INT8 on ``patches`` random windows, saved as ``folder/model_int8.xml``."""
    from medattn3d.engine.quantize import quantize_network, save_ir

    generator = torch.Generator().manual_seed(0)
    windows = list(torch.randn(patches, *window(size)[1:], generator=generator))
    return save_ir(quantize_network(ours(), windows), folder / "model_int8.xml")


def run_case(case: dict) -> dict:
    from monai.inferers import SimpleInferer

    from medattn3d.engine import PrecisionInferer, prepare_for_inference, tune_cpu_allocator

    name, repeats = case["name"], case["repeats"]
    tune_cpu_allocator()
    x = torch.randn(window(case["size"]))
    runtime = "openvino-int8" if "INT8" in name else "openvino" if "OpenVINO" in name else "torch"
    precision = "fp32" if "f32" in name else "bf16"
    network = prepare_for_inference(ours(), precision, runtime=runtime, ir_path=case["ir"])
    inferer = PrecisionInferer(SimpleInferer(), precision, channels_last=runtime == "torch")
    with torch.no_grad():
        return measure(lambda: inferer(x, network), repeats=repeats, warmup=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=SHAPE[-1], help="window edge (default 96; small for a quick check)")
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return
    peaks = matmul_peaks()
    gflop = network_gflop(ours(), torch.zeros(window(args.size)))
    rows = peak_rows(peaks)
    with tempfile.TemporaryDirectory() as tmp:
        ir = str(export_ir(Path(tmp), args.size))
        for name in CASES:
            try:
                result = run_case_in_subprocess(
                    __file__, {"name": name, "repeats": args.repeats, "ir": ir, "size": args.size}
                )
            except CaseFailedError as err:
                rows.append({"case": name, "error": str(err)})
                continue
            rows.append(add_throughput({"case": name, **result}, gflop, peaks))
    reference = next(r for r in rows if r["case"] == REFERENCE)
    for row in rows:
        if "median_s" in row and not row["case"].startswith("matmul"):
            row["speed_vs_bundle_path"] = reference["median_s"] / row["median_s"]
    print_table(rows, ["case", "median_s", "gflop", "gflop_per_s", "pct_bf16_peak", "speed_vs_bundle_path"])
    payload = {
        "benchmark": "int8",
        "machine": machine(),
        "matmul_peaks": peaks,
        "matmul_peaks_end": matmul_peaks(),
        "shape": window(args.size),
        "rows": rows,
    }
    write_json(args.json, {**payload, "note": "shared machine: noisy"})


if __name__ == "__main__":
    main()
