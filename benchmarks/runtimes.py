"""Inference runtimes side by side: the 3D AttentionUNet as the bundles run it in PyTorch, through OpenVINO (bf16 and
f32 hints) and ONNX Runtime, and MONAI's AttentionUnet (fp32, and bf16 autocast + channels-last), with this machine's
measured fp32 and bf16 matmul peaks in the same run (the physical floor for GFLOP/s).

    .venv/bin/python benchmarks/runtimes.py --json benchmarks/results/runtimes.json

Each case runs in a fresh process; medians of repeated forwards of one 1 x 1 x 96^3 window (4 classes, widths
16..256, strides 2). GFLOP is counted once on our network (PyTorch's FlopCounterMode) and used for every row of it,
so GFLOP/s compares the same arithmetic.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CaseFailedError, machine, measure, print_table, run_case_in_subprocess, write_json

SHAPE = (1, 1, 96, 96, 96)
CHANNELS = (16, 32, 64, 128, 256)
CASES = (
    "matmul fp32",
    "matmul bf16",
    "ours, PyTorch (bundle path: bf16 weights, BN folded, channels-last)",
    "ours, OpenVINO bf16 hint",
    "ours, OpenVINO f32",
    "ours, ONNX Runtime fp32",
    "MONAI AttentionUnet fp32",
    "MONAI AttentionUnet bf16 autocast + channels-last",
)


def matmul_peak(dtype: torch.dtype, repeats: int) -> dict:
    """GFLOP/s of a large square matmul: what this machine's cores can do at best in ``dtype``."""
    n = 4096
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    result = measure(lambda: a @ b, repeats=repeats, warmup=2)
    return {**result, "gflop": 2 * n**3 / 1e9}


def ours() -> torch.nn.Module:
    from medattn3d.networks import AttentionUNet

    torch.manual_seed(0)
    return AttentionUNet(3, 1, 4, channels=CHANNELS, strides=(2, 2, 2, 2)).eval()


def monai_attention_unet() -> torch.nn.Module:
    from monai.networks.nets import AttentionUnet

    torch.manual_seed(0)
    return AttentionUnet(3, 1, 4, channels=CHANNELS, strides=(2, 2, 2, 2)).eval()


def network_gflop(network: torch.nn.Module) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        network(torch.zeros(SHAPE))
    return counter.get_total_flops() / 1e9


def run_case(case: dict) -> dict:
    from monai.inferers import SimpleInferer

    from medattn3d.engine import PrecisionInferer, prepare_for_inference, tune_cpu_allocator

    name, repeats = case["name"], case["repeats"]
    if name.startswith("matmul"):
        return matmul_peak(torch.bfloat16 if "bf16" in name else torch.float32, repeats)
    tune_cpu_allocator()
    x = torch.randn(SHAPE)
    if name.startswith("MONAI"):
        network = monai_attention_unet()
        inferer = PrecisionInferer(SimpleInferer(), "fp32" if "fp32" in name else "bf16", "channels-last" in name)
    else:
        runtime = "openvino" if "OpenVINO" in name else "onnxruntime" if "ONNX" in name else "torch"
        precision = "fp32" if ("f32" in name or "fp32" in name) else "bf16"
        network = prepare_for_inference(ours(), precision, runtime=runtime)
        inferer = PrecisionInferer(SimpleInferer(), precision, channels_last=runtime == "torch")
    with torch.no_grad():
        result = measure(lambda: inferer(x, network), repeats=repeats, warmup=2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return
    gflop = {"ours": network_gflop(ours()), "MONAI": network_gflop(monai_attention_unet())}
    rows = []
    for name in CASES:
        try:
            result = run_case_in_subprocess(__file__, {"name": name, "repeats": args.repeats})
        except CaseFailedError as err:
            rows.append({"case": name, "error": str(err)})
            continue
        work = result.pop("gflop", gflop["MONAI" if name.startswith("MONAI") else "ours"])
        rows.append({"case": name, **result, "gflop": work, "gflop_per_s": work / result["median_s"]})
    bundle = next(r for r in rows if r["case"].startswith("ours, PyTorch"))
    for row in rows:
        if "median_s" in row and not row["case"].startswith("matmul"):
            row["speed_vs_bundle_path"] = bundle["median_s"] / row["median_s"]
    print_table(rows, ["case", "median_s", "gflop_per_s", "speed_vs_bundle_path"])
    write_json(args.json, {"machine": machine(), "shape": SHAPE, "rows": rows})


if __name__ == "__main__":
    main()
