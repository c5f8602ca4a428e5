"""Inference runtimes side by side: the 3D AttentionUNet as the bundles run it in PyTorch and through OpenVINO
(precision ``auto``: bf16 where it beats fp32, else fp32), through OpenVINO with each hint and ONNX Runtime,
and MONAI's AttentionUnet (fp32, and bf16 autocast + channels-last), with this machine's measured fp32 and bf16
matmul peaks in the same run (``common.matmul_peaks``, the physical floor for GFLOP/s).

    .venv/bin/python benchmarks/runtimes.py --json benchmarks/results/runtimes.json

Each case runs in a fresh process; medians of repeated forwards of one 1 x 1 x 96^3 window (4 classes, widths
16..256, strides 2), or of two windows per call where the case says so (then seconds per window). GFLOP is counted
once per network (``common.network_gflop``, PyTorch's FlopCounterMode) and used for every row of it, so GFLOP/s
compares the same arithmetic; the peaks are measured first, in this process, and kept in the JSON
(``matmul_peaks``) and as the first two rows.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    CaseFailedError,
    add_throughput,
    bf16_skip_reason,
    machine,
    matmul_peaks,
    measure,
    network_gflop,
    peak_rows,
    print_table,
    run_case_in_subprocess,
    write_json,
)

SHAPE = (1, 1, 96, 96, 96)
CHANNELS = (16, 32, 64, 128, 256)


def auto_precision() -> str:
    """What the bundles' ``precision: auto`` resolves to on this CPU (bf16 only where it beats fp32)."""
    from medattn3d.engine.precision import cpu_prefers_bf16

    return "bf16" if cpu_prefers_bf16() else "fp32"


CASES = (
    f"ours, PyTorch (bundle path: precision auto = {auto_precision()}, BN folded, channels-last)",
    f"ours, OpenVINO, precision auto = {auto_precision()} (the bundles' runtime auto)",
    "ours, OpenVINO bf16 hint",
    "ours, OpenVINO bf16 hint, 2 windows per call on parallel streams",
    "ours, OpenVINO f32",
    "ours, ONNX Runtime fp32",
    "MONAI AttentionUnet fp32",
    "MONAI AttentionUnet bf16 autocast + channels-last",
)


def window(size: int) -> tuple[int, ...]:
    """The benchmark's input: one single-channel ``size``^3 window."""
    return (1, 1, size, size, size)


def ours() -> torch.nn.Module:
    from medattn3d.networks import AttentionUNet

    torch.manual_seed(0)
    return AttentionUNet(3, 1, 4, channels=CHANNELS, strides=(2, 2, 2, 2)).eval()


def monai_attention_unet() -> torch.nn.Module:
    from monai.networks.nets import AttentionUnet

    torch.manual_seed(0)
    return AttentionUnet(3, 1, 4, channels=CHANNELS, strides=(2, 2, 2, 2)).eval()


def run_case(case: dict) -> dict:
    from monai.inferers import SimpleInferer

    from medattn3d.engine import PrecisionInferer, prepare_for_inference, tune_cpu_allocator

    name, repeats = case["name"], case["repeats"]
    tune_cpu_allocator()
    batch = 2 if "2 windows" in name else 1
    x = torch.randn(batch, *window(case["size"])[1:])
    if name.startswith("MONAI"):
        network = monai_attention_unet()
        inferer = PrecisionInferer(SimpleInferer(), "fp32" if "fp32" in name else "bf16", "channels-last" in name)
    else:
        runtime = "openvino" if "OpenVINO" in name else "onnxruntime" if "ONNX" in name else "torch"
        precision = "auto" if "precision auto" in name else "fp32" if ("f32" in name or "fp32" in name) else "bf16"
        network = prepare_for_inference(ours(), precision, runtime=runtime)
        inferer = PrecisionInferer(SimpleInferer(), precision, channels_last=runtime == "torch")
    with torch.no_grad():
        result = measure(lambda: inferer(x, network), repeats=repeats, warmup=2)
    result["windows_per_call"] = batch
    for key in [k for k in result if k.endswith("_s")]:  # every row: seconds per window
        result[key] /= batch
    return result


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
    x = torch.zeros(window(args.size))
    gflop = {"ours": network_gflop(ours(), x), "MONAI": network_gflop(monai_attention_unet(), x)}
    rows = peak_rows(peaks)
    for name in CASES:
        if name.startswith("MONAI") and "bf16" in name and (reason := bf16_skip_reason()):
            rows.append({"case": name, "skipped": reason})
            continue
        try:
            result = run_case_in_subprocess(__file__, {"name": name, "repeats": args.repeats, "size": args.size})
        except CaseFailedError as err:
            rows.append({"case": name, "error": str(err)})
            continue
        rows.append(
            add_throughput({"case": name, **result}, gflop["MONAI" if name.startswith("MONAI") else "ours"], peaks)
        )
    pytorch = next(r for r in rows if r["case"].startswith("ours, PyTorch"))
    for row in rows:
        if "median_s" in row and not row["case"].startswith("matmul"):
            row["speed_vs_pytorch_path"] = pytorch["median_s"] / row["median_s"]
    print_table(rows, ["case", "median_s", "gflop", "gflop_per_s", "pct_bf16_peak", "speed_vs_pytorch_path"])
    payload = {
        "benchmark": "runtimes",
        "machine": machine(),
        "matmul_peaks": peaks,
        "matmul_peaks_end": matmul_peaks(),
        "shape": window(args.size),
        "rows": rows,
    }
    write_json(args.json, payload)


if __name__ == "__main__":
    main()
