"""3D position attention: peak memory and time, forward + backward, ours (fused SDPA) vs the naive softmax(QK^T)V.

    .venv/bin/python benchmarks/position_attention.py --json benchmarks/results/position_attention.json

Each (implementation, size) runs in a fresh process. The naive form is skipped where its N x N matrices alone
would pass --naive-limit-gib (printed). Outputs of the two are compared in fp32 where both run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CaseFailedError, machine, measure, print_table, run_case_in_subprocess, write_json


def naive(module, x: torch.Tensor) -> torch.Tensor:
    """gamma * V softmax(Q^T K)^T + x with the full N x N affinity."""
    q = module.query(x).flatten(2)
    k = module.key(x).flatten(2)
    v = module.value(x).flatten(2)
    affinity = torch.softmax(torch.bmm(q.transpose(1, 2), k), dim=-1)
    return module.gamma * torch.bmm(v, affinity.transpose(1, 2)).reshape(x.shape) + x


def run_case(case: dict) -> dict:
    from medattn3d.networks.blocks import PositionAttention

    torch.manual_seed(0)
    module = PositionAttention(3, case["channels"])
    torch.nn.init.constant_(module.gamma, 0.5)
    x = torch.randn(1, case["channels"], *([case["edge"]] * 3), requires_grad=True)
    forward = (lambda: module(x)) if case["impl"] == "ours (SDPA)" else (lambda: naive(module, x))

    def step() -> None:
        forward().sum().backward()
        x.grad = None
        module.zero_grad(set_to_none=True)

    result = measure(step, repeats=case["repeats"], warmup=1)
    with torch.no_grad():
        out = forward()
    result["checksum"] = float(out.double().sum())
    if case["compare"]:
        with torch.no_grad():
            result["max_abs_diff_vs_naive"] = float((module(x) - naive(module, x)).abs().max())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", nargs="*", type=int, default=[8, 12, 16, 20, 24, 28, 32])
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--naive-limit-gib", type=float, default=14.0)
    parser.add_argument("--json")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return
    rows = []
    for edge in args.edges:
        positions = edge**3
        naive_gib = 3 * positions**2 * 4 / 2**30  # affinity, softmax output and its gradient, fp32
        for impl in ("ours (SDPA)", "naive"):
            if impl == "naive" and naive_gib > args.naive_limit_gib:
                print(f"naive skipped at {edge}^3: its N x N matrices alone need ~{naive_gib:.0f} GiB")
                rows.append({"impl": impl, "positions": f"{edge}^3", "skipped": f"needs ~{naive_gib:.0f} GiB"})
                continue
            case = {
                "impl": impl,
                "edge": edge,
                "channels": args.channels,
                "repeats": args.repeats,
                "compare": impl == "ours (SDPA)" and naive_gib <= args.naive_limit_gib / 3,
            }
            try:
                result = run_case_in_subprocess(__file__, case)
            except CaseFailedError:
                rows.append({"impl": impl, "positions": f"{edge}^3", "skipped": "failed (out of memory?)"})
                continue
            row = {"impl": impl, "positions": f"{edge}^3", "n": positions, **result}
            rows.append(row)
            print(f"{impl:12s} {edge}^3: {row['median_s']:.3f} s, {row['peak_mem_mib']:.0f} MiB", flush=True)
    by_size = {}
    for row in rows:
        by_size.setdefault(row["positions"], {})[row["impl"]] = row
    for pair in by_size.values():
        ours, ref = pair.get("ours (SDPA)"), pair.get("naive")
        if ours and ref and "median_s" in ref and "median_s" in ours:
            ours["memory_ratio_vs_naive"] = ours["peak_mem_mib"] / max(ref["peak_mem_mib"], 1e-9)
            ours["time_ratio_vs_naive"] = ours["median_s"] / ref["median_s"]
    print(f"\nC = {args.channels}, forward + backward, {machine()}")
    print_table(
        rows,
        [
            "impl",
            "positions",
            "median_s",
            "peak_mem_mib",
            "memory_ratio_vs_naive",
            "time_ratio_vs_naive",
            "max_abs_diff_vs_naive",
            "skipped",
        ],
    )
    write_json(args.json, {"benchmark": "position_attention", "machine": machine(), "rows": rows})


if __name__ == "__main__":
    main()
