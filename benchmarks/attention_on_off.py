"""Attention on vs off at equal CPU time: Attention U-Net with gates, the same network with identity gates, and
MONAI's ``UNet``, each trained on the demo data for the same budget of process CPU seconds, over several seeds.

Equal CPU time, not equal epochs or wall time: the machine is shared, so each run counts ``time.process_time()``
(one torch thread per run) from its first training step and stops at the budget; a cheaper network takes more steps
in it. The learning rate follows a cosine over the budget (the bundle's schedule, on CPU seconds instead of epochs),
so every run ends its schedule. Data pipeline, optimiser, loss, patch size, precision and inferers are the shipped
``attention_unet_3d`` bundle's (its ``configs/train.json``: ``train#preprocessing``, ``train#inferer``,
``validate#preprocessing``, ``validate#inferer``). Our networks keep the bundle's deep supervision; MONAI's ``UNet``
(``num_res_units=2``, batch norm, the same widths and strides) has no side heads and trains on the plain DiceCE.

Scored once, on the final weights, on the demo's validation cases: Dice per class (sliding window, argmax), and for
the gated network the inside/outside concentration (:func:`medattn3d.explain.class_ratios`) of every gate level on
every class. Arithmetic: a training step's GFLOP (forward + backward, ``common.network_gflop`` on the run's batch
shape, counted after the budget on a copy of the network) x steps, per CPU second of the run, next to the
one-thread fp32/bf16 matmul peaks measured at the start (``matmul_peaks``; the rate includes data loading, loss and
optimiser time, which do little arithmetic). Setup (caching the data) and scoring are outside the budget. Runs go
two at a time in fresh processes, interleaved by seed so an interrupted benchmark still holds whole seeds; the JSON
is rewritten after every run.

    .venv/bin/python benchmarks/attention_on_off.py                       # 3 seeds x 3 networks, 120 CPU-s each
    .venv/bin/python benchmarks/attention_on_off.py --budget 20 --seeds 1  # a quick look
"""

from __future__ import annotations

import argparse
import copy
import math
import multiprocessing
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import add_throughput, machine, matmul_peaks, network_gflop, print_table, write_json  # noqa: E402

MODELS = ("attention_gates", "no_gates", "monai_unet")
BUNDLE = ROOT / "bundles" / "attention_unet_3d"


def bundle_config(bundle: Path) -> Any:
    """The bundle's train.json, CPU, rooted at ``bundle``."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "train.json"))
    parser["bundle_root"] = str(bundle)
    parser["device"] = "$torch.device('cpu')"
    return parser


def build_network(model: str, config: Any) -> torch.nn.Module:
    """``model`` with the bundle's widths, strides and class count."""
    from monai.networks.nets import UNet

    from medattn3d.networks import AttentionUNet

    spec = {k: v for k, v in config["network_def"].items() if k != "_target_"}
    spec.update(
        spatial_dims=config["spatial_dims"], in_channels=config["in_channels"], out_channels=config["num_classes"]
    )
    if model == "monai_unet":
        return UNet(
            spec["spatial_dims"],
            spec["in_channels"],
            spec["out_channels"],
            channels=spec["channels"],
            strides=[tuple(s) if isinstance(s, list) else s for s in spec["strides"]],
            num_res_units=2,
            norm="batch",
        )
    return AttentionUNet(**spec, attention_gates=model == "attention_gates")


def train_and_score(model: str, seed: int, budget: float, bundle: str) -> dict[str, Any]:
    """One run in its own process: train ``model`` for ``budget`` CPU seconds from ``seed``, score it."""
    from monai.data import CacheDataset, DataLoader
    from monai.losses import DeepSupervisionLoss, DiceCELoss
    from monai.utils import set_determinism

    from medattn3d.data import load_datalist
    from medattn3d.data.demo import prepare_dataset

    torch.set_num_threads(1)
    setup_start = time.perf_counter()
    config = bundle_config(Path(bundle))
    dataset_dir, datalist = config.get_parsed_content("dataset_dir"), config.get_parsed_content("datalist")
    prepare_dataset(dataset_dir, datalist)
    fold = config.get_parsed_content("fold")
    set_determinism(seed=seed)
    train_ds = CacheDataset(
        load_datalist(datalist, "training", dataset_dir, fold),
        transform=config.get_parsed_content("train#preprocessing"),
        num_workers=0,
        progress=False,
    )
    train_ds.transform.set_random_state(seed=seed)
    val_ds = CacheDataset(
        load_datalist(datalist, "validation", dataset_dir, fold),
        transform=config.get_parsed_content("validate#preprocessing"),
        num_workers=0,
        progress=False,
    )
    loader = DataLoader(train_ds, batch_size=1, shuffle=True, num_workers=0)
    network = build_network(model, config)
    deep = bool(getattr(network, "deep_supervision", False))
    dice_ce = DiceCELoss(to_onehot_y=True, softmax=True)
    loss_fn = DeepSupervisionLoss(dice_ce) if deep else dice_ce
    base_lr = float(config["learning_rate"])
    optimizer = torch.optim.AdamW(network.parameters(), lr=base_lr, weight_decay=1e-5)
    inferer = config.get_parsed_content("train#inferer")
    setup_s = time.perf_counter() - setup_start

    network.train()
    steps, losses, used, batch_shape = 0, [], 0.0, None
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    while used < budget:
        for batch in loader:
            for group in optimizer.param_groups:
                group["lr"] = base_lr * 0.5 * (1 + math.cos(math.pi * min(used / budget, 1.0)))
            optimizer.zero_grad(set_to_none=True)
            batch_shape = batch_shape or list(batch["image"].shape)
            loss = loss_fn(inferer(batch["image"], network), batch["label"])
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            steps += 1
            used = time.process_time() - cpu_start
            if used >= budget:
                break
    wall_s = time.perf_counter() - wall_start
    # a training step's arithmetic (forward + backward), counted after the budget on a copy: training is untouched
    step_gflop = network_gflop(copy.deepcopy(network), torch.zeros(batch_shape), train=True)

    score = score_network(network, model, val_ds, config)
    return {
        "model": model,
        "seed": seed,
        "budget_cpu_s": budget,
        "train_cpu_s": used,
        "train_wall_s": wall_s,
        "steps": steps,
        "patches": steps * int(config["num_samples"]),
        "cpu_s_per_step": used / max(steps, 1),
        "batch_shape": batch_shape,
        "step_gflop": step_gflop,
        "final_loss": float(np.mean(losses[-20:])) if losses else float("nan"),
        "setup_wall_s": setup_s,
        "parameters": sum(p.numel() for p in network.parameters()),
        **score,
    }


def score_network(network: torch.nn.Module, model: str, val_ds: Any, config: Any) -> dict[str, Any]:
    """Dice per class per validation case (sliding window, argmax) and, for the gated network, every gate level's
    inside/outside concentration on every class (and on the foreground) per case."""
    from monai.metrics import compute_dice
    from monai.networks.utils import one_hot

    from medattn3d.explain import AttentionPredictor, attention_ratio, class_ratios

    start = time.perf_counter()
    num_classes = int(config["num_classes"])
    inferer = config.get_parsed_content("validate#inferer")
    network.eval()
    predictor = AttentionPredictor(network) if model == "attention_gates" else None
    dice_rows, ratio_rows = [], []
    with torch.no_grad():
        for item in val_ds:
            image, label = item["image"][None], item["label"][None]
            out = inferer(image, predictor if predictor is not None else network)
            logits = out["pred"] if isinstance(out, dict) else out
            pred = one_hot(logits.argmax(dim=1, keepdim=True), num_classes)
            truth = one_hot(label.round().long(), num_classes)
            dice = compute_dice(pred, truth, include_background=False, ignore_empty=True)[0]
            dice_rows.append([float(v) for v in dice])
            if predictor is not None:
                labels = label[0, 0].round().numpy().astype(np.int64)
                ratios = {}
                for name in predictor.names:
                    attention = out[name][0, 0].float().numpy()
                    per_class = class_ratios(attention, labels, range(1, num_classes))
                    ratios[name] = {str(c): v for c, v in per_class.items()}
                    ratios[name]["foreground"] = attention_ratio(attention, labels > 0)
                ratio_rows.append(ratios)
    per_class = np.nanmean(np.array(dice_rows), axis=0)
    result: dict[str, Any] = {
        "dice_per_case": dice_rows,
        "dice": {str(c + 1): float(v) for c, v in enumerate(per_class)},
        "mean_dice": float(np.nanmean(per_class)),
        "score_wall_s": time.perf_counter() - start,
    }
    if ratio_rows:
        result["attention_ratio"] = {
            name: {key: float(np.nanmean([row[name][key] for row in ratio_rows])) for key in ratio_rows[0][name]}
            for name in ratio_rows[0]
        }
    return result


def summarise(runs: list[dict[str, Any]], class_names: dict[str, str]) -> dict[str, Any]:
    """Per model: mean and sample standard deviation over seeds of each class's Dice, the mean Dice, steps and
    (gated network) gate concentrations."""

    def stats(values: list[float]) -> dict[str, float]:
        values = [v for v in values if not math.isnan(v)]
        if not values:
            return {"mean": float("nan"), "std": float("nan"), "min": float("nan"), "max": float("nan")}
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        return {"mean": statistics.fmean(values), "std": spread, "min": min(values), "max": max(values)}

    summary: dict[str, Any] = {}
    for model in MODELS:
        mine = [r for r in runs if r["model"] == model]
        if not mine:
            continue
        entry: dict[str, Any] = {
            "seeds": sorted(r["seed"] for r in mine),
            "dice": {class_names.get(c, c): stats([r["dice"][c] for r in mine]) for c in mine[0]["dice"]},
            "mean_dice": stats([r["mean_dice"] for r in mine]),
            "steps": stats([float(r["steps"]) for r in mine]),
            "train_cpu_s": stats([r["train_cpu_s"] for r in mine]),
        }
        if all(r.get("gflop_per_s") is not None for r in mine):
            entry["step_gflop"] = mine[0]["step_gflop"]
            entry["gflop_per_s"] = stats([r["gflop_per_s"] for r in mine])
            entry["pct_fp32_peak"] = stats([r["pct_fp32_peak"] for r in mine])
            entry["pct_bf16_peak"] = stats([r["pct_bf16_peak"] for r in mine])
        if "attention_ratio" in mine[0]:
            ratios = mine[0]["attention_ratio"]
            entry["attention_ratio"] = {
                level: {
                    class_names.get(key, key): stats([r["attention_ratio"][level][key] for r in mine])
                    for key in ratios[level]
                }
                for level in ratios
            }
        summary[model] = entry
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=120.0, help="training CPU seconds per run (default 120)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--workers", type=int, default=2, help="runs at a time (one torch thread each)")
    parser.add_argument("--bundle", default=str(BUNDLE))
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "attention_on_off.json"))
    args = parser.parse_args(argv)

    peaks = matmul_peaks(threads=1)  # each run trains on one torch thread: its floor is the one-thread peak
    config = bundle_config(Path(args.bundle))
    class_names = {k: v for k, v in config["class_names"].items() if k != "0"}
    jobs = [(model, seed) for seed in range(args.seeds) for model in args.models]
    payload: dict[str, Any] = {
        "benchmark": "attention_on_off",
        "command": "python benchmarks/attention_on_off.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine() | {"torch_threads_per_run": 1, "runs_at_a_time": args.workers},
        "bundle": Path(args.bundle).name,
        "budget_cpu_s": args.budget,
        "class_names": class_names,
        "matmul_peaks": peaks,
        "note": (
            "Equal process CPU time per run (time.process_time, 1 torch thread), cosine LR over the budget, final "
            "weights scored on the demo's validation cases. Shared 2-core machine: CPU seconds are less noisy than "
            "wall time but contention (caches, memory bandwidth) still slows every run somewhat."
        ),
        "runs": [],
    }
    start = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=args.workers, mp_context=context, max_tasks_per_child=1) as pool:
        futures = {pool.submit(train_and_score, m, s, args.budget, args.bundle): (m, s) for m, s in jobs}
        for future in as_completed(futures):
            run = future.result()
            add_throughput(run, run["step_gflop"] * run["steps"], peaks, seconds=run["train_cpu_s"])
            payload["runs"].append(run)
            payload["runs"].sort(key=lambda r: (r["seed"], MODELS.index(r["model"])))
            payload["summary"] = summarise(payload["runs"], class_names)
            payload["total_wall_s"] = time.perf_counter() - start
            write_json(args.json, payload)
            print(
                f"{run['model']} seed {run['seed']}: {run['steps']} steps in {run['train_cpu_s']:.0f} CPU-s "
                f"({run['train_wall_s']:.0f} s wall), mean Dice {run['mean_dice']:.3f}",
                flush=True,
            )

    payload["matmul_peaks_end"] = matmul_peaks(threads=1)
    write_json(args.json, payload)
    rows = []
    for model, entry in payload["summary"].items():
        row = {"model": model, "seeds": len(entry["seeds"]), "steps": round(entry["steps"]["mean"])}
        row |= {name: f"{d['mean']:.3f}±{d['std']:.3f}" for name, d in entry["dice"].items()}
        row["mean"] = f"{entry['mean_dice']['mean']:.3f}±{entry['mean_dice']['std']:.3f}"
        row["GFLOP/CPU-s"] = f"{entry['gflop_per_s']['mean']:.1f}" if "gflop_per_s" in entry else ""
        rows.append(row)
    print_table(rows, ["model", "seeds", "steps", *class_names.values(), "mean", "GFLOP/CPU-s"])
    gated = payload["summary"].get("attention_gates", {}).get("attention_ratio", {})
    for level, ratios in gated.items():
        print(f"attention {level}: " + ", ".join(f"{k} {v['mean']:.2f}" for k, v in ratios.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
