"""Where a 96^3 forward pass spends its time: allocator setting, torch.compile, and a torch.profiler breakdown.

    .venv/bin/python benchmarks/forward_details.py allocator --json benchmarks/results/allocator.json
    .venv/bin/python benchmarks/forward_details.py compile --json benchmarks/results/compile.json
    .venv/bin/python benchmarks/forward_details.py profile --net "ours MSGuidedAttention"

``allocator``: median time and minor page faults per step (inference forward; training forward + backward) of our
AttentionUNet (as ``inference.json`` / ``train.json`` run it) and MONAI's AttentionUnet (fp32), each with glibc's
default allocator and with ``tune_cpu_allocator()``, every case in a fresh process. ``compile``: our inference
forward eager vs ``torch.compile`` (inductor), compile time included. ``profile``: the operators that take the time
in one forward pass, by self time and by input shape.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    add_throughput,
    machine,
    matmul_peaks,
    measure,
    network_gflop,
    print_table,
    run_case_in_subprocess,
    write_json,
)
from network_step import build

SIZE = 96


def prepared(net: str, mode: str = "infer") -> tuple[torch.nn.Module, torch.Tensor, object]:
    """``net`` at 96^3 with the step the bundles run: ours under PrecisionInferer (inference prep for ``infer``,
    bf16 autocast and channels-last for ``train``), MONAI's networks as MONAI runs them (fp32, channels-first)."""
    from monai.inferers import SimpleInferer

    from medattn3d.engine.precision import PrecisionInferer, prepare_for_inference, to_float

    torch.manual_seed(0)
    network = build(net, 3).eval()
    x = torch.randn(1, 1, SIZE, SIZE, SIZE)
    if mode == "train":
        network.train()
        inferer = PrecisionInferer(
            SimpleInferer(), "auto" if net.startswith("ours") else "fp32", net.startswith("ours")
        )

        def train_step() -> None:
            outputs = to_float(inferer(x, network))
            sum(o.mean() for o in (outputs if isinstance(outputs, list) else [outputs])).backward()
            network.zero_grad(set_to_none=True)

        return network, x, train_step
    if net.startswith("ours"):
        prepare_for_inference(network, "auto")
        inferer = PrecisionInferer(SimpleInferer(), "auto", channels_last=True)
        return network, x, lambda: inferer(x, network)
    return network, x, lambda: network(x)


def run_allocator_case(case: dict) -> dict:
    if case["tuned"]:
        from medattn3d.engine.runtime import tune_cpu_allocator

        tune_cpu_allocator()
    _, _, step = prepared(case["net"], case["mode"])
    with torch.no_grad() if case["mode"] == "infer" else contextlib.nullcontext():
        step()
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        result = measure(step, repeats=case["repeats"], warmup=1)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    result["faults_per_forward"] = faults / (case["repeats"] + 1)
    return add_throughput(result, step_gflop(case["net"], case["mode"]), case.get("peaks"))


def step_gflop(net: str, mode: str) -> float:
    """GFLOP of one step of ``net`` at 96^3 (forward, or forward + backward for ``train``), counted on a fresh fp32
    copy: the count does not depend on dtype or layout."""
    network = build(net, 3).train(mode == "train")
    return network_gflop(network, torch.randn(1, 1, SIZE, SIZE, SIZE), train=mode == "train")


def run_compile_case(case: dict) -> dict:
    from monai.inferers import SimpleInferer

    from medattn3d.engine.precision import PrecisionInferer

    network, x, forward = prepared("ours AttentionUNet")
    with torch.no_grad():
        forward()  # prepared() already folded BatchNorm, made activations in-place and cast the weights
        eager = measure(forward, repeats=case["repeats"], warmup=1)["median_s"]
        compiled = torch.compile(network)
        inferer = PrecisionInferer(SimpleInferer(), "auto", channels_last=True)
        start = time.perf_counter()
        inferer(x, compiled)
        compile_s = time.perf_counter() - start
        compiled_s = measure(lambda: inferer(x, compiled), repeats=case["repeats"], warmup=1)["median_s"]
    row = {"eager_s": eager, "compile_s": compile_s, "compiled_s": compiled_s, "speedup": eager / compiled_s}
    add_throughput(row, step_gflop("ours AttentionUNet", "infer"), case.get("peaks"), seconds=eager)
    row["compiled_gflop_per_s"] = row["gflop"] / compiled_s
    return row


def profile(net: str) -> None:
    from torch.profiler import profile as torch_profile

    _, _, forward = prepared(net)
    with torch.no_grad():
        forward()
        forward()
        with torch_profile(record_shapes=True) as prof:
            forward()
    averages = prof.key_averages()
    print(averages.table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=40))
    by_shape = prof.key_averages(group_by_input_shape=True)
    print(by_shape.table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=30))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["allocator", "compile", "profile"], nargs="?")
    parser.add_argument("--net", default="ours AttentionUNet")
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--json")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        case = json.loads(args.case)
        run = run_allocator_case if case["kind"] == "allocator" else run_compile_case
        print(json.dumps(run(case)))
        return
    if args.what == "profile":
        profile(args.net)
        return
    peaks = matmul_peaks()
    if args.what == "compile":
        case = {"kind": "compile", "repeats": 5, "peaks": peaks}
        rows = [{"net": "ours AttentionUNet", **run_case_in_subprocess(__file__, case)}]
        columns = ["net", "eager_s", "compile_s", "compiled_s", "speedup", "gflop", "gflop_per_s"]
        print_table(rows, columns + ["compiled_gflop_per_s"])
    else:
        rows = []
        for mode in ("infer", "train"):
            for net in ("ours AttentionUNet", "MONAI AttentionUnet"):
                for tuned in (False, True):
                    repeats = args.repeats if mode == "infer" else max(2, args.repeats // 2)
                    case = {"kind": "allocator", "net": net, "mode": mode, "tuned": tuned, "repeats": repeats}
                    case["peaks"] = peaks
                    rows.append({"mode": mode, "net": net, "allocator": "tuned" if tuned else "default"})
                    rows[-1].update(run_case_in_subprocess(__file__, case))
                rows[-1]["speedup_vs_default"] = rows[-2]["median_s"] / rows[-1]["median_s"]
        columns = ["mode", "net", "allocator", "median_s", "faults_per_forward", "speedup_vs_default"]
        print_table(rows, columns + ["gflop", "gflop_per_s"])
    payload = {"benchmark": f"forward_{args.what}", "machine": machine(), "matmul_peaks": peaks}
    write_json(args.json, {**payload, "rows": rows})


if __name__ == "__main__":
    main()
