"""3D position attention: peak memory and time, forward + backward, ours (fused SDPA) vs the naive softmax(QK^T)V.

    .venv/bin/python benchmarks/position_attention.py --json benchmarks/results/position_attention.json

Each (implementation, size) runs in a fresh process. The naive form is skipped where its N x N matrices alone
would pass --naive-limit-gib (printed). Outputs of the two are compared in fp32 where both run.

    .venv/bin/python benchmarks/position_attention.py --kernels \
        --json benchmarks/results/position_attention_kernels.json

``--kernels``: the attention product alone at the guided-attention bundle's size (24^3 positions = a 96^3 window at
1/4, C = 32, q/k width 4), inference, fp32 and bf16, every candidate in ONE process in alternating rounds: ours
(SDPA's fused kernel, q/k zero-padded to the value width, which it requires), exact blockwise attention without the
padding (query chunks: q k^T, softmax, times v; memory linear), and SDPA with q, k and v all 4 wide (not a usable
result: what the fused kernel costs when the product is that narrow, i.e. a floor for any unpadded fused kernel).
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
    count_gflop,
    machine,
    matmul_peaks,
    measure,
    print_table,
    run_case_in_subprocess,
    write_json,
)


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

    def ours_step() -> None:  # both rows are rated by ours' arithmetic, so the naive form is not "faster" by doing more
        module(x).sum().backward()
        x.grad = None
        module.zero_grad(set_to_none=True)

    add_throughput(result, count_gflop(ours_step), case.get("peaks"))
    with torch.no_grad():
        out = forward()
    result["checksum"] = float(out.double().sum())
    if case["compare"]:
        with torch.no_grad():
            result["max_abs_diff_vs_naive"] = float((module(x) - naive(module, x)).abs().max())
    return result


def blockwise(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk: int) -> torch.Tensor:
    """Exact softmax(q k^T) v over query chunks, q/k at their own width: memory O(chunk x N) instead of N x N."""
    out = torch.empty(q.shape[0], q.shape[1], v.shape[2], dtype=v.dtype)
    keys = k.transpose(1, 2)
    for start in range(0, q.shape[1], chunk):
        scores = torch.bmm(q[:, start : start + chunk], keys)
        torch.bmm(torch.softmax(scores, dim=-1), v, out=out[:, start : start + chunk])
    return out


def _candidates(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> dict:
    """The attention-product candidates on (1, N, width) q/k and (1, N, C) v, by name."""
    import torch.nn.functional as F

    width, channels = q.shape[2], v.shape[2]
    qp, kp = F.pad(q, [0, channels - width]), F.pad(k, [0, channels - width])
    narrow_v = v[:, :, :width].contiguous()
    return {
        "ours: SDPA fused, q/k zero-padded": lambda: F.scaled_dot_product_attention(
            qp[:, None], kp[:, None], v[:, None], scale=1.0
        ),
        "blockwise exact, unpadded (chunks of 512)": lambda: blockwise(q, k, v, 512),
        "blockwise exact, unpadded (chunks of 2048)": lambda: blockwise(q, k, v, 2048),
        "SDPA fused, q/k/v all 4 wide (floor, not a result)": lambda: F.scaled_dot_product_attention(
            q[:, None], k[:, None], narrow_v[:, None], scale=1.0
        ),
    }


def kernels(edge: int, channels: int, rounds: int, repeats: int) -> list[dict]:
    """Alternating rounds of the attention-product candidates, one process (see the module docstring)."""
    import statistics

    torch.manual_seed(0)
    n, width = edge**3, max(channels // 8, 1)
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        q, k = torch.randn(1, n, width, dtype=dtype), torch.randn(1, n, width, dtype=dtype)
        v = torch.randn(1, n, channels, dtype=dtype)
        candidates = _candidates(q, k, v)
        with torch.no_grad():
            reference = candidates["ours: SDPA fused, q/k zero-padded"]()[:, 0].float()
            errors = {"blockwise exact, unpadded (chunks of 512)": blockwise(q, k, v, 512).float()}
            times: dict[str, list[float]] = {name: [] for name in candidates}
            for _ in range(rounds):
                for name, run in candidates.items():
                    times[name].append(measure(run, repeats=repeats, warmup=1)["median_s"])
        ours = times["ours: SDPA fused, q/k zero-padded"]
        for name in candidates:
            ratios = [a / b for a, b in zip(ours, times[name], strict=True)]
            row = {
                "dtype": str(dtype).removeprefix("torch."),
                "impl": name,
                "positions": f"{edge}^3",
                "median_s": statistics.median(times[name]),
                "speed_vs_ours": statistics.median(ratios),
                "round_s": times[name],
            }
            if name in errors:
                row["max_abs_diff_vs_ours"] = float((errors[name] - reference).abs().max())
            rows.append(row)
            print(f"{row['dtype']:9s} {name:52s} {row['median_s']:.4f} s  x{row['speed_vs_ours']:.2f}", flush=True)
    return rows


def backward_kernels(edge: int, channels: int, rounds: int, repeats: int, peaks: dict) -> list[dict]:
    """Alternating rounds of the training product, forward + backward in fp32 (see the module docstring)."""
    import statistics

    import torch.nn.functional as F

    from medattn3d.networks.blocks.dual_attention import PositionAttentionProduct

    torch.manual_seed(0)
    n, width = edge**3, max(channels // 8, 1)
    q, k = torch.randn(1, n, width), torch.randn(1, n, width)
    v, weight = torch.randn(1, n, channels), torch.randn(1, n, channels)

    def fused() -> tuple[torch.Tensor, ...]:
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        qp, kp = (F.pad(t, [0, channels - width]).unsqueeze(1) for t in leaves[:2])
        out = F.scaled_dot_product_attention(qp, kp, leaves[2].unsqueeze(1), scale=1.0)[:, 0]
        return torch.autograd.grad((out * weight).sum(), leaves)

    def ours() -> tuple[torch.Tensor, ...]:
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        return torch.autograd.grad((PositionAttentionProduct.apply(*leaves) * weight).sum(), leaves)

    candidates = {
        "PyTorch fused forward + backward (q/k padded)": fused,
        "ours: fused forward, blockwise backward": ours,
    }
    difference = max(float((a - b).abs().max()) for a, b in zip(fused(), ours(), strict=True))
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, run in candidates.items():
            times[name].append(measure(run, repeats=repeats, warmup=1)["median_s"])
    reference = times["PyTorch fused forward + backward (q/k padded)"]
    rows = []
    for name, run in candidates.items():
        ratios = [a / b for a, b in zip(reference, times[name], strict=True)]
        row = {
            "impl": name,
            "positions": f"{edge}^3",
            "channels": channels,
            "median_s": statistics.median(times[name]),
            "speed_vs_fused": statistics.median(ratios),
            "round_ratios": ratios,
            "max_abs_grad_diff": difference,
        }
        rows.append(add_throughput(row, count_gflop(run), peaks))
        print(f"{name:48s} {row['median_s']:.3f} s  x{row['speed_vs_fused']:.2f}  {row['gflop']:.1f} GFLOP", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernels", action="store_true", help="one-process kernel comparison (see the docstring)")
    parser.add_argument("--backward", action="store_true", help="training product, fused vs ours (docstring)")
    parser.add_argument("--rounds", type=int, default=3)
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
    peaks = matmul_peaks()
    if args.backward:
        rows = backward_kernels(24, 32, args.rounds, args.repeats, peaks)
        print(f"\ntraining attention product at 24^3 positions, C = 32, q/k width 4, fp32, {machine()}")
        print_table(rows, ["impl", "median_s", "speed_vs_fused", "gflop", "gflop_per_s", "max_abs_grad_diff"])
        payload = {"benchmark": "position_attention_backward", "machine": machine(), "matmul_peaks": peaks}
        write_json(args.json, {**payload, "rows": rows})
        return
    if args.kernels:
        rows = kernels(24, 32, args.rounds, args.repeats)
        print(f"\nattention product at 24^3 positions, C = 32, q/k width 4, inference, {machine()}")
        print_table(rows, ["dtype", "impl", "median_s", "speed_vs_ours", "max_abs_diff_vs_ours"])
        payload = {"benchmark": "position_attention_kernels", "machine": machine(), "matmul_peaks": peaks}
        write_json(args.json, {**payload, "rows": rows})
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
                "peaks": peaks,
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
            "gflop",
            "gflop_per_s",
            "skipped",
        ],
    )
    payload = {"benchmark": "position_attention", "machine": machine(), "matmul_peaks": peaks, "rows": rows}
    write_json(args.json, payload)


if __name__ == "__main__":
    main()
