"""Network step benchmark: forward (inference) and forward+backward (training) time and peak memory of our networks
side by side with MONAI's AttentionUnet and UNet at the same widths, fp32 vs bf16 autocast, channels-first vs -last.

    .venv/bin/python benchmarks/network_step.py --dims 3 --json benchmarks/results/network_step_3d.json

Each case runs in a fresh process (so peak memory is its own); medians of repeated runs; ratios are speedups over
MONAI's AttentionUnet in fp32, channels-first (its default), measured in the same run.

    .venv/bin/python benchmarks/network_step.py --paired --json benchmarks/results/network_step_paired.json

``--paired``: the 3D guided-attention network as its bundle runs it against MONAI's AttentionUnet in fp32, both in
ONE process and timed in alternating rounds, so a shared, noisy CPU slows both alike; reports each round's ratio and
their median. Inference: ours under ``prepare_for_inference`` + ``PrecisionInferer`` (bf16 where supported,
channels-last, BatchNorm folded), also with its shared encoder-decoder run once per scale (the code before it ran
once on the stacked scales) for comparison. Training: one forward + backward, ours under ``PrecisionInferer``
(bf16 autocast, channels-last, conv guard) as ``train.json`` runs it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CaseFailedError, machine, measure, print_table, run_case_in_subprocess, write_json

CHANNELS = (16, 32, 64, 128, 256)
STRIDES = (2, 2, 2, 2)
NETS = ("ours AttentionUNet", "MONAI AttentionUnet", "MONAI UNet", "ours MSGuidedAttention")
# (precision, channels-last, BatchNorm folded into the convolutions: inference only, as inference.json does)
VARIANTS = (
    ("fp32", False, False),
    ("fp32", True, False),
    ("bf16", False, False),
    ("bf16", True, False),
    ("bf16", True, True),
)


def build(net: str, dims: int) -> torch.nn.Module:
    from monai.networks.nets import AttentionUnet, UNet

    from medattn3d.networks import AttentionUNet, MultiScaleGuidedAttentionNet

    if net == "ours AttentionUNet":
        return AttentionUNet(dims, 1, 4, channels=CHANNELS, strides=STRIDES)
    if net == "MONAI AttentionUnet":
        return AttentionUnet(dims, 1, 4, channels=CHANNELS, strides=STRIDES)
    if net == "MONAI UNet":
        return UNet(dims, 1, 4, channels=CHANNELS, strides=STRIDES, num_res_units=2)
    return MultiScaleGuidedAttentionNet(dims, 1, 4, backbone="resnet18", feature_channels=32 if dims == 3 else 64)


def flatten(output) -> list[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, dict):
        return [t for v in output.values() for t in flatten(v)]
    return [t for v in output for t in flatten(v)]


def run_case(case: dict) -> dict:
    """One (network, mode, precision, layout) case, in this process."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    dims, size = case["dims"], case["size"]
    network = build(case["net"], dims)
    x = torch.randn(1, 1, *([size] * dims))
    if case["channels_last"]:
        layout = torch.channels_last_3d if dims == 3 else torch.channels_last
        network = network.to(memory_format=layout)
        x = x.contiguous(memory_format=layout)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        network.eval()(x)
    forward_gflop = counter.get_total_flops() / 1e9
    dtype = torch.bfloat16 if case["precision"] == "bf16" else torch.float32
    autocast = torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32)
    if case["mode"] == "infer" and case["fold_norm"]:
        # exactly what the bundles' inference.json runs: BatchNorm folded, in-place activations, bf16 weights
        from monai.inferers import SimpleInferer

        from medattn3d.engine.precision import PrecisionInferer, prepare_for_inference

        prepare_for_inference(network, case["precision"], channels_last=case["channels_last"])
        inferer = PrecisionInferer(SimpleInferer(), case["precision"], case["channels_last"])

        def step() -> None:
            with torch.no_grad():
                inferer(x, network)

    elif case["mode"] == "infer":

        def step() -> None:
            with torch.no_grad(), autocast:
                network(x)
    else:
        network.train()

        def step() -> None:
            with autocast:
                loss = sum(t.float().mean() for t in flatten(network(x)))
            loss.backward()
            network.zero_grad(set_to_none=True)

    result = measure(step, repeats=case["repeats"], warmup=1)
    result["gflop"] = forward_gflop * (3 if case["mode"] == "train" else 1)
    result["gflop_per_s"] = result["gflop"] / result["median_s"]
    result["params_m"] = sum(p.numel() for p in network.parameters()) / 1e6
    return result


def paired(size: int, rounds: int, repeats: int, modes: list[str]) -> list[dict]:
    """Alternating rounds of MONAI AttentionUnet fp32 vs our guided-attention network as its bundle runs it."""
    import statistics

    from monai.inferers import SimpleInferer

    from medattn3d.engine.precision import PrecisionInferer, prepare_for_inference, to_float

    torch.manual_seed(0)
    x = torch.randn(1, 1, size, size, size)
    monai = build("MONAI AttentionUnet", 3)
    ours = prepare_for_inference(build("ours MSGuidedAttention", 3), "auto", channels_last=True)
    infer = PrecisionInferer(SimpleInferer(), "auto", channels_last=True)
    trained = build("ours MSGuidedAttention", 3).train()
    train_inferer = PrecisionInferer(SimpleInferer(), "auto", channels_last=True)
    monai_train = build("MONAI AttentionUnet", 3)

    def per_scale(flag: bool) -> None:
        """Run the shared encoder-decoder once per scale (the step module alone in training mode; its children,
        BatchNorms included, stay in eval mode, so the function is the same)."""
        for step in ours.steps:
            step.training = flag

    def monai_infer() -> None:
        with torch.no_grad():
            monai.eval()(x)

    def ours_infer() -> None:
        with torch.no_grad():
            infer(x, ours)

    def ours_infer_per_scale() -> None:
        per_scale(True)
        try:
            ours_infer()
        finally:
            per_scale(False)

    def monai_train_step() -> None:
        monai_train.train()(x).float().mean().backward()
        monai_train.zero_grad(set_to_none=True)

    def ours_train_step() -> None:
        outputs = to_float(train_inferer(x, trained))
        sum(t.mean() for t in flatten(outputs)).backward()
        trained.zero_grad(set_to_none=True)

    cases = {
        "infer": [
            ("MONAI AttentionUnet fp32", monai_infer),
            ("ours MSGuidedAttention as its bundle runs it", ours_infer),
            ("ours, encoder-decoder once per scale (before)", ours_infer_per_scale),
        ],
        "train": [("MONAI AttentionUnet fp32", monai_train_step), ("ours MSGuidedAttention bf16", ours_train_step)],
    }
    rows = []
    for mode, entries in cases.items():
        if mode not in modes:
            continue
        times: dict[str, list[float]] = {name: [] for name, _ in entries}
        for _ in range(rounds):
            for name, step in entries:
                times[name].append(measure(step, repeats=repeats, warmup=1)["median_s"])
        reference = times[entries[0][0]]
        for name, _ in entries:
            ratios = [r / t for r, t in zip(reference, times[name], strict=True)]
            rows.append(
                {
                    "mode": mode,
                    "net": name,
                    "median_s": statistics.median(times[name]),
                    "round_s": times[name],
                    "speedup_vs_monai_attunet_fp32": statistics.median(ratios),
                    "round_ratios": ratios,
                }
            )
            ratio = rows[-1]["speedup_vs_monai_attunet_fp32"]
            print(f"{mode:5s} {name:48s} {rows[-1]['median_s']:.3f} s  ratio {ratio:.3f}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paired", action="store_true", help="one-process alternating rounds (see the docstring)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds for --paired")
    parser.add_argument("--dims", type=int, choices=(2, 3), default=3)
    parser.add_argument("--size", type=int, help="edge of the input (default 96 in 3D, 512 in 2D)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--nets", nargs="*", default=list(NETS), choices=NETS)
    parser.add_argument("--modes", nargs="*", default=["infer", "train"], choices=["infer", "train"])
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return
    size = args.size or (96 if args.dims == 3 else 512)
    if args.paired:
        rows = paired(args.size or 96, args.rounds, max(1, args.repeats // 2), args.modes)
        print(f"\n3D, input 1x1x{size}^3, {args.rounds} alternating rounds in one process, {machine()}")
        print_table(rows, ["mode", "net", "median_s", "speedup_vs_monai_attunet_fp32"])
        write_json(args.json, {"benchmark": "network_step_paired", "machine": machine(), "size": size, "rows": rows})
        return
    rows = []
    for mode in args.modes:
        for net in args.nets:
            for precision, channels_last, fold_norm in VARIANTS:
                if fold_norm and mode == "train":
                    continue
                case = {
                    "fold_norm": fold_norm,
                    "net": net,
                    "dims": args.dims,
                    "size": size,
                    "mode": mode,
                    "precision": precision,
                    "channels_last": channels_last,
                    "repeats": args.repeats if mode == "infer" else max(2, args.repeats // 2),
                }
                try:
                    row = {**case, **run_case_in_subprocess(__file__, case)}
                except CaseFailedError as err:
                    print(f"failed: {case}: {err}", file=sys.stderr)
                    continue
                row["layout"] = ("channels-last" if channels_last else "channels-first") + (
                    " +inference prep" if fold_norm else ""
                )
                rows.append(row)
                print(f"{mode:5s} {net:24s} {precision} {row['layout']:24s} {row['median_s']:.3f} s", flush=True)
    for mode in args.modes:
        reference = next(
            (
                r
                for r in rows
                if r["mode"] == mode
                and r["net"] == "MONAI AttentionUnet"
                and r["precision"] == "fp32"
                and not r["channels_last"]
            ),
            None,
        )
        for row in rows:
            if row["mode"] == mode and reference:
                row["speedup_vs_monai_attunet_fp32"] = reference["median_s"] / row["median_s"]
    print(f"\n{args.dims}D, input 1x1x{'x'.join([str(size)] * args.dims)}, {machine()}")
    print_table(
        rows,
        [
            "mode",
            "net",
            "precision",
            "layout",
            "median_s",
            "peak_mem_mib",
            "gflop",
            "gflop_per_s",
            "params_m",
            "speedup_vs_monai_attunet_fp32",
        ],
    )
    write_json(
        args.json, {"benchmark": "network_step", "machine": machine(), "dims": args.dims, "size": size, "rows": rows}
    )


if __name__ == "__main__":
    main()
