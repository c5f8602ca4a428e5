"""Attention maps next to Grad-CAM: how concentrated each saliency is on the target, per class, same predictions.

For every validation case of a trained Attention U-Net bundle, one whole-volume pass of the network (the preprocessed
volume, padded at its far ends to the network's multiple) gives the prediction and the gate coefficients of every
gated level; MONAI's ``monai.visualize.GradCAM`` on the same network and input gives one map per class, at the last
decoder block (``final_up``: full resolution, just before the 1x1 output head) by default. For class ``c`` the
concentration is :func:`medattn3d.explain.attention_ratio`: mean saliency inside the ground-truth voxels of ``c``
over the mean outside them (1 = no preference; higher = more concentrated on the class). Gate maps are not
class-specific, so one gate map is scored against every class; Grad-CAM gets a map per class.

Trains nothing: it reads the bundle's trained weights (``medattn3d demo`` or ``medattn3d train`` writes them) or the
``--checkpoint`` given, and stops with a one-line message when there are none.

    .venv/bin/python benchmarks/gradcam_vs_attention.py                       # bundles/attention_unet_3d, its weights
    .venv/bin/python benchmarks/gradcam_vs_attention.py --checkpoint model.pt --target-layers final_up decoder.0.up
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.transforms import DivisiblePad
from monai.visualize import GradCAM

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import machine, write_json  # noqa: E402
from medattn3d.data import load_datalist  # noqa: E402
from medattn3d.explain import AttentionPredictor, class_ratios, separation_auc  # noqa: E402
from medattn3d.training import load_weights  # noqa: E402


def load_bundle(bundle: Path, checkpoint: Path | None) -> tuple[ConfigParser, torch.nn.Module, Path]:
    """The bundle's inference + explain configuration and its network with the trained weights loaded (CPU)."""
    if not (bundle / "configs" / "inference.json").is_file():
        sys.exit(f"{bundle}: not a bundle folder (no configs/inference.json)")
    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / "inference.json"), str(bundle / "configs" / "explain.json")])
    parser["bundle_root"] = str(bundle)
    parser["device"] = "$torch.device('cpu')"
    checkpoint = checkpoint or Path(parser.get_parsed_content("checkpoint"))
    if not checkpoint.is_file():
        sys.exit(
            f"{checkpoint}: no trained weights; run `medattn3d demo` (or `medattn3d train --bundle {bundle.name}`) "
            "first, or pass --checkpoint"
        )
    network = parser.get_parsed_content("network_def")
    load_weights(network, checkpoint)
    return parser, network.eval(), checkpoint


def class_names_of(parser: ConfigParser, num_classes: int) -> dict[int, str]:
    """Class names from the bundle (``class_names``) or its datalist's ``labels``; ``class k`` otherwise."""
    names: dict = {}
    if "class_names" in parser:
        names = parser.get_parsed_content("class_names")
    else:
        datalist = Path(parser.get_parsed_content("datalist"))
        if datalist.is_file():
            names = json.loads(datalist.read_text(encoding="utf-8")).get("labels", {})
    return {c: str(names.get(str(c), names.get(c, f"class {c}"))) for c in range(num_classes)}


def dice(prediction: np.ndarray, label: np.ndarray, c: int) -> float:
    """Dice of class ``c`` (nan when it is absent from both)."""
    p, t = prediction == c, label == c
    total = int(p.sum() + t.sum())
    return float(2 * np.logical_and(p, t).sum() / total) if total else float("nan")


def saliency_maps(
    network: torch.nn.Module, image: torch.Tensor, classes: list[int], layers: list[str]
) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, dict[int, np.ndarray]], dict[str, float]]:
    """One preprocessed case ``(C, *size)`` through ``network``: the prediction, the gate maps (``{name: map}``) and
    the Grad-CAM maps (``{"gradcam_<layer>": {class: map}}``, raw: ReLU'd, not rescaled), all at ``size``; and the
    seconds each took."""
    size = image.shape[1:]
    multiple = [int(m) for m in getattr(network, "multiples", [16] * len(size))]
    padded = DivisiblePad(k=multiple, method="end")(image)[None].float()
    crop = (slice(None), slice(None), *(slice(0, s) for s in size))
    missing = [layer for layer in layers if layer not in dict(network.named_modules())]
    if missing:
        raise SystemExit(f"Grad-CAM target layer {missing[0]!r} is not a module of {type(network).__name__}")
    start = time.perf_counter()
    with torch.no_grad():
        out = AttentionPredictor(network)(padded)
    prediction = out["pred"][crop].argmax(dim=1)[0].numpy()
    gates = {name: out[name][crop][0, 0].numpy() for name in out if name != "pred"}
    seconds = {"attention": time.perf_counter() - start}
    start = time.perf_counter()
    cam = GradCAM(network, target_layers=layers, postprocessing=lambda x: x)  # MONAI's default flips to (1, 0)
    gradcams = {
        f"gradcam_{layer}": {
            c: cam(padded, class_idx=c, layer_idx=i)[crop][0, 0].detach().numpy().astype(np.float32) for c in classes
        }
        for i, layer in enumerate(layers)
    }
    seconds["gradcam"] = time.perf_counter() - start
    return prediction, gates, gradcams, seconds


def explain_case(
    network: torch.nn.Module, image: torch.Tensor, label: np.ndarray, classes: list[int], layers: list[str]
) -> dict[str, Any]:
    """Dice of the prediction and the concentration of every map on every class, for one preprocessed case."""
    prediction, gates, gradcams, seconds = saliency_maps(network, image, classes, layers)
    per_class = {name: {c: volume for c in classes} for name, volume in gates.items()} | gradcams
    ratios = {name: {c: class_ratios(maps[c], label, [c])[c] for c in classes} for name, maps in per_class.items()}
    auc = {name: {c: separation_auc(maps[c], label == c) for c in classes} for name, maps in per_class.items()}
    return {"dice": {c: dice(prediction, label, c) for c in classes}, "ratios": ratios, "auc": auc, "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default=str(ROOT / "bundles" / "attention_unet_3d"))
    parser.add_argument("--checkpoint", type=Path, help="default: the bundle's models/model.pt")
    parser.add_argument("--cases", type=int, default=0, help="first N validation cases (default: all)")
    parser.add_argument("--target-layers", nargs="+", default=["final_up"], help="Grad-CAM layers (module names)")
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "gradcam_vs_attention.json"))
    args = parser.parse_args(argv)

    bundle = Path(args.bundle).resolve()
    config, network, checkpoint = load_bundle(bundle, args.checkpoint)
    torch.manual_seed(0)
    num_classes = int(config.get_parsed_content("num_classes"))
    names = class_names_of(config, num_classes)
    classes = list(range(1, num_classes))
    items = load_datalist(config.get_parsed_content("datalist"), "validation", config.get_parsed_content("dataset_dir"))
    items = items[: args.cases] if args.cases else items
    preprocessing = config.get_parsed_content("label_preprocessing")  # image and label on the network's grid

    rows = []
    for item in items:
        data = preprocessing({"image": item["image"], "label": item["label"]})
        label = np.asarray(data["label"][0]).round().astype(np.int64)
        result = explain_case(network, data["image"].as_tensor(), label, classes, args.target_layers)
        rows.append({"case": Path(str(item["image"])).name, **result})
        print(f"{rows[-1]['case']}: dice {[round(v, 3) for v in result['dice'].values()]}", flush=True)

    methods = list(rows[0]["ratios"])

    def average(key: str) -> dict[str, dict[str, float]]:
        return {m: {names[c]: float(np.nanmean([r[key][m][c] for r in rows])) for c in classes} for m in methods}

    mean, mean_auc = average("ratios"), average("auc")
    mean_dice = {names[c]: float(np.nanmean([r["dice"][c] for r in rows])) for c in classes}
    print(f"\nmean over {len(rows)} validation case(s), ground-truth classes: inside/outside ratio (AUC)")
    header = ["map", *(names[c] for c in classes)]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for m in methods:
        cells = [f"{mean[m][names[c]]:.2f} ({mean_auc[m][names[c]]:.3f})" for c in classes]
        print("| " + " | ".join([m, *cells]) + " |")
    print("| Dice of the prediction | " + " | ".join(f"{mean_dice[names[c]]:.3f}" for c in classes) + " |")
    write_json(
        args.json,
        {
            "bundle": bundle.name,
            "checkpoint": str(checkpoint),
            "target_layers": args.target_layers,
            "classes": {c: names[c] for c in classes},
            "mean_ratio": mean,
            "mean_auc": mean_auc,
            "mean_dice": mean_dice,
            "cases": rows,
            "machine": machine(),
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
