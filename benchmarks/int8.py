"""INT8 speed on one window: the 3D AttentionUNet of benchmarks/runtimes.py (1 x 1 x 96^3, widths 16..256, 4
classes) as the bundles run it in PyTorch, through OpenVINO (bf16 hint, f32) and as the INT8 model NNCF makes
(``medattn3d.engine.quantize``, the code behind ``medattn3d export --format openvino-int8``), with this machine's
fp32 and bf16 matmul peaks measured in the same run:

    .venv/bin/python benchmarks/int8.py --json benchmarks/results/int8.json

The INT8 model is quantized once here (random weights, calibrated on a few random windows: speed does not depend on
the calibration data) and saved to a temporary IR; each case then runs in a fresh process (medians of repeated
forwards). GFLOP is counted once on the PyTorch network (FlopCounterMode) and used for every row, so GFLOP/s of the
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
from common import CaseFailedError, machine, measure, print_table, run_case_in_subprocess, write_json
from runtimes import SHAPE, matmul_peak, network_gflop, ours

REFERENCE = "ours, PyTorch (bundle path: bf16 weights, BN folded, channels-last)"
CASES = (
    "matmul fp32",
    "matmul bf16",
    REFERENCE,
    "ours, OpenVINO bf16 hint",
    "ours, OpenVINO f32",
    "ours, OpenVINO INT8 (bf16 hint)",
    "ours, OpenVINO INT8 (f32 hint)",
)


def export_ir(folder: Path, patches: int = 4) -> Path:
    """The benchmark network quantized to INT8 on ``patches`` random windows, saved as ``folder/model_int8.xml``."""
    from medattn3d.engine.quantize import quantize_network, save_ir

    generator = torch.Generator().manual_seed(0)
    windows = list(torch.randn(patches, *SHAPE[1:], generator=generator))
    return save_ir(quantize_network(ours(), windows), folder / "model_int8.xml")


def run_case(case: dict) -> dict:
    from monai.inferers import SimpleInferer

    from medattn3d.engine import PrecisionInferer, prepare_for_inference, tune_cpu_allocator

    name, repeats = case["name"], case["repeats"]
    if name.startswith("matmul"):
        return matmul_peak(torch.bfloat16 if "bf16" in name else torch.float32, repeats)
    tune_cpu_allocator()
    x = torch.randn(SHAPE)
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
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return
    gflop = network_gflop(ours())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ir = str(export_ir(Path(tmp)))
        for name in CASES:
            try:
                result = run_case_in_subprocess(__file__, {"name": name, "repeats": args.repeats, "ir": ir})
            except CaseFailedError as err:
                rows.append({"case": name, "error": str(err)})
                continue
            work = result.pop("gflop", gflop)
            rows.append({"case": name, **result, "gflop": work, "gflop_per_s": work / result["median_s"]})
    reference = next(r for r in rows if r["case"] == REFERENCE)
    for row in rows:
        if "median_s" in row and not row["case"].startswith("matmul"):
            row["speed_vs_bundle_path"] = reference["median_s"] / row["median_s"]
    print_table(rows, ["case", "median_s", "gflop_per_s", "speed_vs_bundle_path"])
    write_json(args.json, {"machine": machine(), "shape": SHAPE, "rows": rows, "note": "shared machine: noisy"})


if __name__ == "__main__":
    main()
