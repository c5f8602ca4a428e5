"""AttentionUNet training step, paired in one process: ours as its bundle trains it vs MONAI's AttentionUnet with bf16
autocast + channels-last, ours as before round 4 (plain ``torch.cat``, oneDNN's weight gradients everywhere), and
MONAI's AttentionUnet in its default fp32 (the peer where ``precision: auto`` runs fp32: bf16 emulated or slower;
the reference where bf16 has no vector kernel at all, ``common.bf16_skip_reason``, and the bf16 row is skipped).

    .venv/bin/python benchmarks/unet_step.py --threads 2 --allocator tuned --json benchmarks/results/unet_step.json

The candidates alternate in ``--rounds`` rounds inside one process (each round: the median of ``--repeats`` steps
per candidate), so load changes on a shared machine hit them alike; every row reports the median and each round's
ratio to the reference. Shapes: ``bundle`` is the network, patch and batch of ``bundles/attention_unet_3d``'s
``configs/train.json`` (2 x 1 x 64 x 64 x 32, 6 classes, deep supervision); an edge (``96``) is one cubic patch,
batch 1, same network. A step is forward + backward + zeroing the gradients: ``--loss mean`` sums the outputs'
means (as ``network_step.py --paired`` does), ``--loss dicece`` is the bundle's loss (``DeepSupervisionLoss`` of
``DiceCELoss`` on every output; MONAI's network, having one output, gets ``DiceCELoss``) on random labels. Ours runs
through ``PrecisionInferer`` (precision auto, channels-last) exactly as the bundle's trainer does.

``--allocator tuned`` first calls ``medattn3d.engine.tune_cpu_allocator()`` (freed memory stays in malloc's heap),
which the bundle's ``initialize`` does before training; it applies to every candidate of the process, MONAI's too.
``default`` leaves glibc's malloc as it is (as ``network_step.py`` does): then every large activation is fresh
memory faulted in page by page, and with two threads on a loaded machine those faults cost more than the arithmetic
(96^3 steps of 6-9 s instead of 0.7-0.9 s).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    add_throughput,
    bf16_skip_reason,
    machine,
    matmul_peaks,
    measure,
    network_gflop,
    print_table,
    write_json,
)

ROOT = Path(__file__).resolve().parents[1]
MONAI_BF16 = "MONAI AttentionUnet bf16 + channels-last (reference)"


def bundle_network() -> tuple[torch.nn.Module, list[int]]:
    """The AttentionUNet of ``bundles/attention_unet_3d/configs/train.json`` and its training batch shape."""
    from monai.bundle import ConfigParser

    config = ConfigParser()
    config.read_config(str(ROOT / "bundles" / "attention_unet_3d" / "configs" / "train.json"))
    batch = int(config["num_samples"]) * int(config["train"]["dataloader"]["batch_size"])
    network = config.get_parsed_content("network_def", instantiate=True)
    return network, [batch, int(config["in_channels"]), *config["roi_size"]]


def monai_like(network: torch.nn.Module) -> torch.nn.Module:
    """MONAI's AttentionUnet at the widths, strides and classes of our AttentionUNet ``network``."""
    from monai.networks.nets import AttentionUnet

    encoder = list(network.encoder)
    widths = [encoder[0].conv_1.conv.out_channels] + [level[1].conv_1.conv.out_channels for level in encoder[1:]]
    strides = [level[0].kernel_size for level in encoder[1:]]
    return AttentionUnet(network.spatial_dims, network.in_channels, network.head.out_channels, widths, strides)


@contextlib.contextmanager
def as_before() -> Iterator[None]:
    """Inside: our network runs as before this round: ``torch.cat`` (strided-slice gradients) and oneDNN's weight
    gradients on every grid (no ``SmallGridConv3d`` GEMM)."""
    from medattn3d.networks import attention_unet
    from medattn3d.networks.blocks import attention_gate, conv

    saved = attention_unet.cat_channels, attention_gate.cat_channels, conv.MAX_GEMM_POSITIONS
    attention_unet.cat_channels = attention_gate.cat_channels = lambda tensors: torch.cat(tensors, dim=1)
    conv.MAX_GEMM_POSITIONS = 0
    try:
        yield
    finally:
        attention_unet.cat_channels, attention_gate.cat_channels, conv.MAX_GEMM_POSITIONS = saved


def flatten(output: torch.Tensor | list[torch.Tensor]) -> list[torch.Tensor]:
    return [output] if isinstance(output, torch.Tensor) else list(output)


def cases(
    shape_name: str, loss_name: str, also_precisions: Sequence[str] = ()
) -> list[tuple[str, Callable[[], None], float]]:
    """(name, step, GFLOP of forward + backward); the first is the reference."""
    from monai.inferers import SimpleInferer
    from monai.losses import DeepSupervisionLoss, DiceCELoss

    from medattn3d.engine.precision import PrecisionInferer

    torch.manual_seed(0)
    ours, shape = bundle_network()
    if shape_name != "bundle":
        shape = [1, shape[1]] + [int(shape_name)] * 3
    monai = monai_like(ours).to(memory_format=torch.channels_last_3d)
    monai_fp32 = monai_like(ours)  # MONAI's default: fp32, contiguous (the peer where auto runs fp32)
    x = torch.randn(shape)
    x_last = x.contiguous(memory_format=torch.channels_last_3d)
    labels = torch.randint(0, int(ours.head.out_channels), (shape[0], 1, *shape[2:])).float()
    dicece = DiceCELoss(to_onehot_y=True, softmax=True)
    supervised = DeepSupervisionLoss(dicece)
    inferer = PrecisionInferer(SimpleInferer(), "auto", channels_last=True)

    def loss_of(outputs: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        if loss_name == "mean":
            return sum(t.float().mean() for t in flatten(outputs))
        return supervised(outputs, labels) if isinstance(outputs, list) else dicece(outputs.float(), labels)

    def monai_step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = monai.train()(x_last)
        loss_of(out).backward()
        monai.zero_grad(set_to_none=True)

    def ours_step() -> None:
        loss_of(inferer(x, ours.train())).backward()
        ours.zero_grad(set_to_none=True)

    def ours_step_in(precision: str) -> Callable[[], None]:
        forced = PrecisionInferer(SimpleInferer(), precision, channels_last=True)

        def step() -> None:
            loss_of(forced(x, ours.train())).backward()
            ours.zero_grad(set_to_none=True)

        return step

    def ours_before_step() -> None:
        with as_before():
            ours_step()

    def monai_fp32_step() -> None:
        loss_of(monai_fp32.train()(x)).backward()
        monai_fp32.zero_grad(set_to_none=True)

    monai_gflop = network_gflop(monai_like(ours), x, train=True)
    ours_gflop = network_gflop(bundle_network()[0], x, train=True)
    ours_entries = [
        ("ours AttentionUNet as its bundle trains it", ours_step, ours_gflop),
        ("ours as before round 4 (torch.cat, oneDNN weight gradients)", ours_before_step, ours_gflop),
        *((f"ours AttentionUNet, precision {name}", ours_step_in(name), ours_gflop) for name in also_precisions),
    ]
    if bf16_skip_reason():  # no bf16 vector kernels: MONAI's fp32 default is the only peer a user has
        return [("MONAI AttentionUnet fp32 (its default; reference)", monai_fp32_step, monai_gflop), *ours_entries]
    return [
        (MONAI_BF16, monai_step, monai_gflop),
        *ours_entries,
        ("MONAI AttentionUnet fp32 (its default)", monai_fp32_step, monai_gflop),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="*", default=["bundle", "96"], help="'bundle' and/or cubic edges")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="steps per candidate per round (median taken)")
    parser.add_argument("--threads", type=int, help="torch threads (default: PyTorch's)")
    parser.add_argument("--loss", choices=("mean", "dicece"), default="mean")
    parser.add_argument(
        "--allocator",
        choices=("default", "tuned"),
        default="default",
        help="'tuned': medattn3d.engine.tune_cpu_allocator() first, as the bundle's training does (applies to every "
        "candidate of this process)",
    )
    parser.add_argument(
        "--also-precisions",
        nargs="*",
        default=[],
        help="extra rows: ours trained in these precisions (fp32, bf16), next to 'as its bundle trains it' (auto)",
    )
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.allocator == "tuned":
        from medattn3d.engine import tune_cpu_allocator

        print(f"allocator tuned: {tune_cpu_allocator()}")
    load_start = os.getloadavg()
    peaks = matmul_peaks()
    print(f"matmul peaks: fp32 {peaks['fp32_gflop_per_s']:.0f} GFLOP/s, bf16 {peaks['bf16_gflop_per_s']:.0f} GFLOP/s")
    rows = []
    for shape_name in args.shapes:
        if reason := bf16_skip_reason():
            rows.append({"shape": shape_name, "net": MONAI_BF16.removesuffix(" (reference)"), "skipped": reason})
        entries = cases(shape_name, args.loss, args.also_precisions)
        times: dict[str, list[float]] = {name: [] for name, _, _ in entries}
        for _ in range(args.rounds):
            for name, step, _ in entries:
                times[name].append(measure(step, repeats=args.repeats, warmup=1)["median_s"])
        reference = times[entries[0][0]]
        for name, _, gflop in entries:
            ratios = [r / t for r, t in zip(reference, times[name], strict=True)]
            row = {
                "shape": shape_name,
                "net": name,
                "median_s": statistics.median(times[name]),
                "round_s": times[name],
                "speedup_vs_reference": statistics.median(ratios),
                "round_ratios": [round(r, 3) for r in ratios],
            }
            rows.append(add_throughput(row, gflop, peaks))
            print(f"{shape_name:7s} {name:64s} {row['median_s']:.3f} s  ratios {row['round_ratios']}", flush=True)
    peaks_end, load_end = matmul_peaks(), os.getloadavg()
    print(f"\nload (1, 5, 15 min) {load_start} -> {load_end}")
    print(f"\nAttentionUNet training step, {args.rounds} alternating rounds, loss {args.loss}, {machine()}")
    print_table(rows, ["shape", "net", "median_s", "speedup_vs_reference", "round_ratios", "gflop", "gflop_per_s"])
    write_json(
        args.json,
        {
            "benchmark": "unet_step",
            "machine": machine(),
            "threads": torch.get_num_threads(),
            "loss": args.loss,
            "allocator": args.allocator,
            "matmul_peaks": peaks,
            "matmul_peaks_end": peaks_end,
            "load_start": load_start,
            "load_end": load_end,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
