"""Network step benchmark: forward (inference) and forward+backward (training) time and peak memory of our networks
side by side with MONAI's AttentionUnet and UNet at the same widths, fp32 vs bf16 autocast, channels-first vs -last.

    .venv/bin/python benchmarks/network_step.py --dims 3 --json benchmarks/results/network_step_3d.json

Each case runs in a fresh process (so peak memory is its own); medians of repeated runs; ratios are speedups over
MONAI's AttentionUnet in fp32, channels-first (its default), measured in the same run.

    .venv/bin/python benchmarks/network_step.py --paired --json benchmarks/results/network_step_paired.json

``--paired``: side-by-side ratios in ONE process, timed in alternating rounds, so a shared, noisy CPU slows both
candidates alike; reports each round's ratio and their median. Three modes, each our network vs its reference:
``infer`` (one 96^3 window: the 3D guided-attention network through ``prepare_for_inference`` +
``PrecisionInferer`` on the PyTorch path and, where OpenVINO is installed, as its bundle's ``runtime: auto`` serves
it, through OpenVINO; vs MONAI's AttentionUnet fp32), ``train`` (one forward + backward of the guided network as
its bundle trains it, ``PrecisionInferer`` with precision auto and channels-last, vs MONAI's AttentionUnet fp32)
and ``train-unet`` (our AttentionUNet as its bundle trains it vs MONAI's AttentionUnet at the same widths, strides
and classes with bf16 autocast + channels-last). ``--train-shapes bundle`` trains each bundle's own network on its
patch and batch (``configs/train.json``: 2 x 64 x 64 x 32); an edge (``96``) trains the benchmark's networks on one
cubic patch. Every row carries GFLOP (``common.network_gflop``: forward, or forward + backward) and GFLOP/s next
to the matmul peaks measured in the same run.

``--loss``: what a training step differentiates. ``mean`` (the default) sums the means of every output tensor, the
same cheap stand-in for every network. ``bundle`` trains each network with its real loss on a random integer label
map: ours with its bundle's ``configs/train.json`` loss (the guided network: ``GuidedAttentionLoss``, DiceCE on the
eight scale predictions and the fused one plus the guided and reconstruction terms; the AttentionUNet:
``DeepSupervisionLoss(DiceCELoss)``), MONAI's AttentionUnet with ``DiceCELoss(to_onehot_y=True, softmax=True)`` (at
the bundle patch it then predicts the bundle's classes). ``--loss mean bundle`` gives both sets of rows.

    .venv/bin/python benchmarks/network_step.py --paired --modes train --train-shapes bundle --loss mean bundle
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Callable
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
    print_table,
    run_case_in_subprocess,
    write_json,
)

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
    torch.manual_seed(0)
    dims, size = case["dims"], case["size"]
    network = build(case["net"], dims)
    x = torch.randn(1, 1, *([size] * dims))
    if case["channels_last"]:
        layout = torch.channels_last_3d if dims == 3 else torch.channels_last
        network = network.to(memory_format=layout)
        x = x.contiguous(memory_format=layout)
    train = case["mode"] == "train"
    gflop = network_gflop(copy.deepcopy(network).train(train), x, train=train)
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
    add_throughput(result, gflop, case.get("peaks"))
    result["params_m"] = sum(p.numel() for p in network.parameters()) / 1e6
    return result


def bundle_network(name: str) -> tuple[torch.nn.Module, list[int]]:
    """The network a shipped bundle's ``configs/train.json`` builds, and its training batch shape (batch = the
    patches drawn per volume, ``num_samples`` x the loader's ``batch_size``; one input channel)."""
    from monai.bundle import ConfigParser

    config = ConfigParser()
    config.read_config(str(Path(__file__).resolve().parents[1] / "bundles" / name / "configs" / "train.json"))
    batch = int(config["num_samples"]) * int(config["train"]["dataloader"]["batch_size"])
    return config.get_parsed_content("network_def", instantiate=True), [batch, int(config["in_channels"])] + list(
        config["roi_size"]
    )


def monai_like(network: torch.nn.Module) -> torch.nn.Module:
    """MONAI's AttentionUnet at the widths, strides and classes of our AttentionUNet ``network``."""
    from monai.networks.nets import AttentionUnet

    encoder = list(network.encoder)
    widths = [encoder[0].conv_1.conv.out_channels] + [level[1].conv_1.conv.out_channels for level in encoder[1:]]
    strides = [level[0].kernel_size for level in encoder[1:]]
    return AttentionUnet(network.spatial_dims, network.in_channels, network.head.out_channels, widths, strides)


def bundle_loss(name: str) -> tuple[torch.nn.Module, int]:
    """The loss a shipped bundle's ``configs/train.json`` trains with, and its number of classes."""
    from monai.bundle import ConfigParser

    config = ConfigParser()
    config.read_config(str(Path(__file__).resolve().parents[1] / "bundles" / name / "configs" / "train.json"))
    return config.get_parsed_content("loss", instantiate=True), int(config["num_classes"])


def out_channels(network: torch.nn.Module) -> int:
    """Classes a network predicts: the channels of its eval-mode output on a small input."""
    with torch.no_grad():
        network = copy.deepcopy(network).eval()
        return network(torch.zeros(1, 1, 32, 32, 32)).shape[1]


def paired_cases(
    train_shape: str, peaks: dict | None, loss: str = "mean"
) -> dict[str, list[tuple[str, Callable[[], None], float]]]:
    """(name, step, GFLOP) per mode, the first of each mode the reference: ``infer`` (96^3, one window, the guided
    network as its bundle infers vs MONAI AttentionUnet fp32), ``train`` (the guided network as its bundle trains vs
    MONAI AttentionUnet fp32) and ``train-unet`` (our AttentionUNet as its bundle trains vs MONAI AttentionUnet with
    bf16 autocast + channels-last, the two lines a MONAI user would add). ``train_shape`` is ``bundle`` (each
    bundle's own network, patch and batch: 2 x 64 x 64 x 32) or an edge (one cubic patch, batch 1, the
    benchmark's widths and 4 classes). ``loss`` is ``mean`` or ``bundle`` (see the module docstring)."""
    from monai.inferers import SimpleInferer
    from monai.losses import DiceCELoss
    from monai.networks.nets import AttentionUnet

    from medattn3d.engine.precision import PrecisionInferer, prepare_for_inference, weights_dtype

    torch.manual_seed(0)
    x = torch.randn(1, 1, 96, 96, 96)
    monai = build("MONAI AttentionUnet", 3)
    ours = prepare_for_inference(build("ours MSGuidedAttention", 3), "auto", channels_last=True)
    infer = PrecisionInferer(SimpleInferer(), "auto", channels_last=True)
    if train_shape == "bundle":
        guided, shape = bundle_network("ms_guided_attention_3d")
        unet, unet_shape = bundle_network("attention_unet_3d")
    else:
        edge = int(train_shape)
        guided, unet, shape = build("ours MSGuidedAttention", 3), build("ours AttentionUNet", 3), [1, 1] + [edge] * 3
        unet_shape = shape
    train_x, unet_x = torch.randn(shape), torch.randn(unet_shape)
    monai_train, monai_unet = monai_like(unet), monai_like(unet)
    guided_loss, unet_loss = mean_of_outputs, mean_of_outputs
    if loss == "bundle" and train_shape == "bundle":
        guided_loss, guided_classes = bundle_loss("ms_guided_attention_3d")
        unet_loss, _ = bundle_loss("attention_unet_3d")
    elif loss == "bundle":
        guided_loss, unet_loss = bundle_loss("ms_guided_attention_3d")[0], bundle_loss("attention_unet_3d")[0]
        guided_classes = out_channels(guided)
    if train_shape == "bundle":  # the guided reference: MONAI's network at the benchmark's widths, same patch
        monai_train = build("MONAI AttentionUnet", 3)
        if loss == "bundle":  # ... predicting the bundle's classes
            monai_train = AttentionUnet(3, 1, guided_classes, CHANNELS, STRIDES)
    monai_unet.to(memory_format=torch.channels_last_3d)
    unet_x_last = unet_x.contiguous(memory_format=torch.channels_last_3d)
    reference_loss = DiceCELoss(to_onehot_y=True, softmax=True) if loss == "bundle" else mean_of_outputs
    guided_label = labels(train_x, out_channels(guided)) if loss == "bundle" else None
    monai_label = labels(train_x, out_channels(monai_train)) if loss == "bundle" else None
    unet_label = labels(unet_x, out_channels(unet)) if loss == "bundle" else None

    def monai_infer() -> None:
        with torch.no_grad():
            monai.eval()(x)

    def ours_infer() -> None:
        with torch.no_grad():
            infer(x, ours)

    served = bundle_runtime_network()

    def ours_served_infer() -> None:  # converts (or finds the cached model) in the first round's warm-up call
        with torch.no_grad():
            infer(x, served)

    def monai_fp32_step() -> None:
        reference_loss(monai_train.train()(train_x).float(), monai_label).backward()
        monai_train.zero_grad(set_to_none=True)

    unet_peer_bf16 = bf16_skip_reason() is None  # else MONAI's fp32 default is the peer (no bf16 vector kernels)
    unet_peer = "MONAI AttentionUnet bf16 + channels-last" if unet_peer_bf16 else "MONAI AttentionUnet fp32"

    def monai_bf16_last_step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=unet_peer_bf16):
            out = monai_unet.train()(unet_x_last)
        reference_loss(out.float(), unet_label).backward()
        monai_unet.zero_grad(set_to_none=True)

    def bundle_step(
        network: torch.nn.Module, batch: torch.Tensor, loss_fn: Callable, label: torch.Tensor | None
    ) -> Callable[[], None]:
        """One forward + backward as the bundle's trainer runs it (PrecisionInferer, precision auto, channels-last),
        through ``loss_fn`` (the bundle's loss or the mean of the outputs)."""
        inferer = PrecisionInferer(SimpleInferer(), "auto", channels_last=True)

        def step() -> None:
            loss_fn(inferer(batch, network.train()), label).backward()
            network.zero_grad(set_to_none=True)

        return step

    def gflop(network: torch.nn.Module, batch: torch.Tensor, train: bool) -> float:
        return network_gflop(copy.deepcopy(network).train(train), batch, train=train)

    ref_tag, ours_tag = (" + DiceCE", " + bundle loss") if loss == "bundle" else ("", "")
    ours_dtype = weights_dtype(ours) or torch.float32  # bf16 weights only where precision auto chose bf16
    return {
        "infer": [
            ("MONAI AttentionUnet fp32", monai_infer, gflop(monai, x, False)),
            ("ours MSGuidedAttention, PyTorch path (runtime torch)", ours_infer, gflop(ours, x.to(ours_dtype), False)),
        ]
        + (
            [
                (
                    f"ours MSGuidedAttention as its bundle runs it (runtime auto = {served.runtime})",
                    ours_served_infer,
                    gflop(ours, x.to(ours_dtype), False),
                )
            ]
            if served is not None
            else []
        ),
        "train": [
            ("MONAI AttentionUnet fp32" + ref_tag, monai_fp32_step, gflop(monai_train, train_x, True)),
            (
                "ours MSGuidedAttention as its bundle trains it" + ours_tag,
                bundle_step(guided, train_x, guided_loss, guided_label),
                gflop(guided, train_x, True),
            ),
        ],
        "train-unet": [
            (
                unet_peer + ref_tag,
                monai_bf16_last_step,
                gflop(monai_unet, unet_x, True),
            ),
            (
                "ours AttentionUNet as its bundle trains it" + ours_tag,
                bundle_step(unet, unet_x, unet_loss, unet_label),
                gflop(unet, unet_x, True),
            ),
        ],
    }


def bundle_runtime_network() -> torch.nn.Module | None:
    """The 3D guided network as its bundle's ``runtime: auto`` serves it on this CPU (OpenVINO where installed:
    ``prepare_for_inference`` returns the runtime's stand-in), or ``None`` where ``auto`` is PyTorch itself (then
    the PyTorch row is the bundle's path)."""
    from medattn3d.engine.backends import resolve_runtime
    from medattn3d.engine.precision import prepare_for_inference

    if resolve_runtime("auto", "cpu") == "torch":
        return None
    torch.manual_seed(0)
    return prepare_for_inference(build("ours MSGuidedAttention", 3), "auto", runtime="auto")


def mean_of_outputs(output: object, label: torch.Tensor | None = None) -> torch.Tensor:
    """The stand-in loss: the sum of the means of every output tensor (the label is ignored)."""
    return sum(t.float().mean() for t in flatten(output))


def labels(batch: torch.Tensor, classes: int) -> torch.Tensor:
    """A random integer label map (one channel, as float like MONAI's loaders give it) for ``batch``."""
    generator = torch.Generator().manual_seed(1)
    shape = [batch.shape[0], 1, *batch.shape[2:]]
    return torch.randint(0, classes, shape, generator=generator).float()


def paired(
    train_shapes: list[str],
    rounds: int,
    repeats: int,
    modes: list[str],
    peaks: dict | None = None,
    losses: tuple[str, ...] = ("mean",),
) -> list[dict]:
    """Alternating rounds of each mode's reference and our network, all in this process (see the docstring)."""
    import statistics

    rows = []
    for train_shape, loss in [(shape, loss) for shape in train_shapes for loss in losses]:
        cases = paired_cases(train_shape, peaks, loss)
        for mode, entries in cases.items():
            first = train_shape == train_shapes[0] and loss == losses[0]
            if mode not in modes or (mode == "infer" and not first):
                continue
            times: dict[str, list[float]] = {name: [] for name, _, _ in entries}
            for _ in range(rounds):
                for name, step, _ in entries:
                    times[name].append(measure(step, repeats=repeats, warmup=1)["median_s"])
            reference = times[entries[0][0]]
            for name, _, gflop in entries:
                ratios = [r / t for r, t in zip(reference, times[name], strict=True)]
                row = {
                    "mode": mode,
                    "shape": "1x1x96^3" if mode == "infer" else train_shape,
                    "loss": "none" if mode == "infer" else loss,
                    "net": name,
                    "reference": entries[0][0],
                    "median_s": statistics.median(times[name]),
                    "round_s": times[name],
                    "speedup_vs_reference": statistics.median(ratios),
                    "round_ratios": ratios,
                }
                rows.append(add_throughput(row, gflop, peaks))
                print(
                    f"{mode:10s} {row['shape']:8s} {name:48s} {row['median_s']:.3f} s  ratio {ratios} "
                    f"{row['gflop']:.1f} GFLOP {row['gflop_per_s']:.0f} GFLOP/s",
                    flush=True,
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paired", action="store_true", help="one-process alternating rounds (see the docstring)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds for --paired")
    parser.add_argument("--dims", type=int, choices=(2, 3), default=3)
    parser.add_argument("--size", type=int, help="edge of the input (default 96 in 3D, 512 in 2D)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--nets", nargs="*", default=list(NETS), choices=NETS)
    parser.add_argument("--modes", nargs="*", default=["infer", "train"], choices=["infer", "train", "train-unet"])
    parser.add_argument(
        "--train-shapes",
        nargs="*",
        default=["bundle", "96"],
        help="--paired training patches: 'bundle' (each bundle's own patch and batch) and/or cubic edges",
    )
    parser.add_argument(
        "--threads", type=int, help="--paired: torch threads (1 is steadier than 2 on a machine other jobs load)"
    )
    parser.add_argument(
        "--loss",
        nargs="*",
        default=["mean"],
        choices=["mean", "bundle"],
        help="--paired training loss: 'mean' of the outputs and/or each network's real 'bundle' loss (see above)",
    )
    parser.add_argument(
        "--allocator",
        choices=["default", "tuned"],
        default="default",
        help="--paired: 'tuned' applies medattn3d.engine.tune_cpu_allocator() first, as every bundle's training does "
        "(for every candidate of the process alike)",
    )
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return
    size = args.size or (96 if args.dims == 3 else 512)
    if args.paired and args.threads:
        torch.set_num_threads(args.threads)
    if args.paired and args.allocator == "tuned":
        from medattn3d.engine import tune_cpu_allocator

        print(f"allocator tuned: {tune_cpu_allocator()}")
    peaks = matmul_peaks()
    print(f"matmul peaks: fp32 {peaks['fp32_gflop_per_s']:.0f} GFLOP/s, bf16 {peaks['bf16_gflop_per_s']:.0f} GFLOP/s")
    if args.paired:
        modes = args.modes if args.modes != ["infer", "train"] else ["infer", "train", "train-unet"]
        rows = paired(args.train_shapes, args.rounds, max(1, args.repeats // 2), modes, peaks, tuple(args.loss))
        print(f"\n3D, {args.rounds} alternating rounds in one process, {machine()}")
        print_table(rows, ["mode", "shape", "loss", "net", "median_s", "speedup_vs_reference", "gflop", "gflop_per_s"])
        payload = {"benchmark": "network_step_paired", "machine": machine(), "matmul_peaks": peaks, "rows": rows}
        payload["allocator"] = args.allocator
        write_json(args.json, payload)
        return
    rows = []
    for mode in [m for m in args.modes if m in ("infer", "train")]:
        for net in args.nets:
            for precision, channels_last, fold_norm in VARIANTS:
                if fold_norm and mode == "train":
                    continue
                if precision == "bf16" and bf16_skip_reason():  # minutes per step with no bf16 vector kernels
                    continue
                case = {
                    "peaks": peaks,
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
        args.json,
        {
            "benchmark": "network_step",
            "machine": machine(),
            "matmul_peaks": peaks,
            "dims": args.dims,
            "size": size,
            "rows": [{k: v for k, v in row.items() if k != "peaks"} for row in rows],
        },
    )


if __name__ == "__main__":
    main()
