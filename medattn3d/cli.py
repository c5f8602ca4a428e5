"""The ``medattn3d`` command: thin wrappers over ``monai.bundle`` runs and the package's modules.

Every subcommand runs a bundle config (or a module's own entry point); none adds training or inference logic that
the bundle lacks. Bad input ends with one line, ``error: <file>: <problem>``, and a non-zero exit status
(``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from medattn3d.errors import InputError, find_input_error

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".dcm")


def _bundle_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Overrides common to train/evaluate: data location and ``key=value`` pairs (values parsed as JSON)."""
    import json

    overrides: dict[str, Any] = {}
    if getattr(args, "dataset_dir", None):
        overrides["dataset_dir"] = str(Path(args.dataset_dir).resolve())
    if getattr(args, "datalist", None):
        overrides["datalist"] = str(Path(args.datalist).resolve())
    if getattr(args, "max_epochs", None):
        overrides["max_epochs"] = args.max_epochs
    for item in getattr(args, "set", None) or []:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def _input_volumes(path: Path) -> list[Path]:
    """The volumes behind ``path``: a file, a DICOM series folder, or a folder of volume files."""
    from medattn3d.data.dicom import series_headers

    if not path.exists():
        raise InputError(path, "file not found")
    if path.is_file():
        return [path]
    if series_headers(path):
        return [path]  # a DICOM series folder
    volumes = sorted(p for p in path.iterdir() if p.is_file() and p.name.lower().endswith(VOLUME_SUFFIXES))
    series = sorted(p for p in path.iterdir() if p.is_dir() and series_headers(p))
    if not volumes and not series:
        raise InputError(path, "holds no volumes (NIfTI, NRRD, MHA, DICOM files or DICOM series folders)")
    return volumes + series


def cmd_train(args: argparse.Namespace) -> int:
    from medattn3d.bundles import bundle_path, run_bundle

    bundle = bundle_path(args.bundle)
    configs = ["train.json"] if not args.multi_gpu else ["train.json", "multi_gpu_train.json"]
    overrides = _bundle_overrides(args)
    if args.fresh:
        overrides["resume"] = False
    run_bundle(bundle, configs, **overrides)
    print(
        f"trained: best weights in {bundle / 'models' / 'model.pt'}, resumable state in "
        f"{bundle / 'models' / 'checkpoint_last.pt'}, TensorBoard logs in {bundle / 'eval'}"
    )
    return 0


def _dice_table(eval_dir: Path, class_names: dict[str, str]) -> list[tuple[str, float]]:
    """Per-class mean Dice from MONAI's ``MetricsSaver`` summary CSV, named after the manifest's labels."""
    summary = eval_dir / "val_mean_dice_summary.csv"
    rows: list[tuple[str, float]] = []
    with open(summary) as stream:
        for row in csv.reader(stream):
            if not row or row[0] == "class":
                continue
            name = row[0]
            if name.startswith("class"):
                index = str(int(name.removeprefix("class")) + 1)  # background is excluded from the metric
                name = class_names.get(index, name)
            rows.append((name, float(row[1])))
    return rows


def cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from medattn3d.bundles import bundle_path, run_bundle
    from medattn3d.data.demo import default_demo_dir

    bundle = bundle_path(args.bundle)
    _require_weights(bundle / "models" / "model.pt", args.bundle)
    overrides = _bundle_overrides(args)
    run_bundle(bundle, ["train.json", "evaluate.json"], **overrides)
    datalist = Path(overrides.get("datalist", Path(overrides.get("dataset_dir", default_demo_dir())) / "dataset.json"))
    labels = json.loads(datalist.read_text()).get("labels", {}) if datalist.is_file() else {}
    eval_dir = bundle / "eval"
    table = _dice_table(eval_dir, labels)
    for name, value in table:
        print(f"  Dice {name:<20s} {value:.4f}")
    print(f"metrics: {eval_dir / 'metrics.csv'}, per case and class: {eval_dir / 'val_mean_dice_raw.csv'}")
    return 0


def _require_weights(path: Path, bundle: str) -> None:
    if not path.is_file():
        raise InputError(
            path, f"no trained weights: train first (medattn3d train --bundle {bundle}) or pass --checkpoint"
        )


def _checkpoint(args: argparse.Namespace, bundle: Path) -> Path:
    """``--checkpoint`` if given (it must exist), else the bundle's ``models/model.pt`` (it must exist too)."""
    checkpoint = Path(args.checkpoint) if args.checkpoint else bundle / "models" / "model.pt"
    if args.checkpoint and not checkpoint.is_file():
        raise InputError(checkpoint, "checkpoint not found")
    _require_weights(checkpoint, args.bundle)
    return checkpoint


def cmd_infer(args: argparse.Namespace) -> int:
    from medattn3d.bundles import bundle_path, read_config, run_bundle
    from medattn3d.data.loading import CheckVolumed, load_volume

    bundle = bundle_path(args.bundle)
    checkpoint = _checkpoint(args, bundle)
    inputs = _input_volumes(Path(args.input))
    channels = int(read_config(bundle).get("in_channels", 1))
    check = CheckVolumed(label_key=None, channels=channels)
    for path in inputs:  # every input is checked before anything is written
        check({"image": load_volume(path, args.series_uid)})
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".medattn3d-", dir=output))
    try:
        run_bundle(
            bundle,
            ["inference.json"],
            input_paths=[str(p.resolve()) for p in inputs],
            output_dir=str(staging),
            checkpoint=str(checkpoint.resolve()),
            series_uid=args.series_uid,
        )
        written = sorted(staging.iterdir())
        for file in written:
            file.replace(output / file.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for file in written:
        print(f"wrote {output / file.name}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    """Attention maps, montages, an HTML index and inside/outside ratios (default: the validation cases)."""
    from medattn3d.bundles import bundle_path, run_bundle

    bundle = bundle_path(args.bundle)
    checkpoint = _checkpoint(args, bundle)
    overrides: dict[str, Any] = {"checkpoint": str(checkpoint.resolve())}
    if args.output:
        overrides["output_dir"] = str(Path(args.output).resolve())
    if args.input:
        inputs = _input_volumes(Path(args.input))
        if args.label and len(inputs) != 1:
            raise InputError(args.input, "--label needs exactly one input volume")
        overrides["input_paths"] = [str(p.resolve()) for p in inputs]
        overrides["label_paths"] = [str(Path(args.label).resolve())] if args.label else None
    overrides.update(_bundle_overrides(args))
    run_bundle(bundle, ["inference.json", "explain.json"], **overrides)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """TorchScript (``ckpt_export``) or ONNX (``onnx_export``, needs the ``export`` extra) of the trained network."""
    from monai.bundle import ckpt_export, onnx_export

    from medattn3d.bundles import bundle_path, read_config

    bundle = bundle_path(args.bundle)
    checkpoint = _checkpoint(args, bundle)
    suffix = ".onnx" if args.format == "onnx" else ".ts"
    target = Path(args.output) if args.output else bundle / "models" / f"model{suffix}"
    common = {
        "net_id": "network_def",
        "filepath": str(target),
        "ckpt_file": str(checkpoint),
        "meta_file": str(bundle / "configs" / "metadata.json"),
        "config_file": str(bundle / "configs" / "inference.json"),
        "bundle_root": str(bundle),
    }
    if args.format == "onnx":
        roi = read_config(bundle)["roi_size"]
        onnx_export(**common, use_trace=True, input_shape=[1, int(read_config(bundle).get("in_channels", 1)), *roi])
    else:
        ckpt_export(**common)
    print(f"wrote {target}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Generate the demo data, train, evaluate, predict the demo's test volumes, explain the validation cases."""
    from medattn3d.bundles import bundle_path
    from medattn3d.data.demo import default_demo_dir

    bundle = bundle_path(args.bundle)
    start = time.time()
    data = {"dataset_dir": None, "datalist": None, "set": None}
    print(f"[1/4] training {bundle.name} on the demo data in {default_demo_dir()} (resumes if interrupted)")
    cmd_train(argparse.Namespace(bundle=args.bundle, multi_gpu=False, fresh=False, max_epochs=args.max_epochs, **data))
    print("[2/4] evaluating the best weights on the validation cases")
    cmd_evaluate(argparse.Namespace(bundle=args.bundle, max_epochs=None, **data))
    print("[3/4] predicting the demo's test volumes")
    predictions = bundle / "predictions"
    cmd_infer(
        argparse.Namespace(
            bundle=args.bundle,
            input=str(default_demo_dir() / "imagesTs"),
            output=str(predictions),
            checkpoint=None,
            series_uid=None,
        )
    )
    print("[4/4] attention maps of the validation cases")
    cmd_explain(
        argparse.Namespace(
            bundle=args.bundle, input=None, label=None, output=None, checkpoint=None, max_epochs=None, **data
        )
    )
    print(f"demo finished in {(time.time() - start) / 60:.1f} min.")
    print(f"  weights:               {bundle / 'models' / 'model.pt'}")
    print(f"  metrics and curves:    {bundle / 'eval'} (training_report.png, val_mean_dice_*.csv)")
    print(f"  predictions:           {predictions}")
    print(f"  attention maps:        {bundle / 'explain' / 'index.html'}")
    return 0


def cmd_check_data(args: argparse.Namespace) -> int:
    from medattn3d.data.check import main as check_main

    return check_main([args.manifest] + (["--root", args.root] if args.root else []))


def cmd_networks(args: argparse.Namespace) -> int:
    from medattn3d.summary import main as networks_summary

    networks_summary()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medattn3d", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_bundle(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--bundle", default="attention_unet_3d", help="bundle name under bundles/, or a bundle folder")
        return p

    def with_data(p: argparse.ArgumentParser) -> None:
        p.add_argument("--dataset-dir", help="data root (default: the embedded demo data)")
        p.add_argument("--datalist", help="Decathlon-style manifest (default: DATASET_DIR/dataset.json)")
        p.add_argument("--max-epochs", type=int)
        p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any bundle config override (JSON value)")

    demo = with_bundle(sub.add_parser("demo", help="train, evaluate and predict on the embedded demo data"))
    demo.add_argument("--max-epochs", type=int)
    demo.set_defaults(func=cmd_demo)
    train = with_bundle(sub.add_parser("train", help="train a bundle (resumes from models/checkpoint_last.pt)"))
    with_data(train)
    train.add_argument("--fresh", action="store_true", help="start over (the old checkpoint is kept, renamed)")
    train.add_argument("--multi-gpu", action="store_true", help="merge multi_gpu_train.json (run under torchrun)")
    train.set_defaults(func=cmd_train)
    evaluate = with_bundle(sub.add_parser("evaluate", help="Dice per class of models/model.pt on the validation set"))
    with_data(evaluate)
    evaluate.set_defaults(func=cmd_evaluate)
    infer = with_bundle(sub.add_parser("infer", help="segment volumes; label maps in each input's geometry"))
    infer.add_argument("--input", required=True, help="NIfTI/NRRD/MHA file, DICOM series folder or folder of volumes")
    infer.add_argument("--output", required=True, help="folder for <input name>_seg.nii.gz files")
    infer.add_argument("--checkpoint", help="weights (default: the bundle's models/model.pt)")
    infer.add_argument("--series-uid", help="DICOM SeriesInstanceUID, when a folder holds several series")
    infer.set_defaults(func=cmd_infer)
    explain = with_bundle(sub.add_parser("explain", help="attention maps as NIfTI, PNG montages and an HTML index"))
    explain.add_argument("--input", help="volume(s) to explain (default: the validation cases of the datalist)")
    explain.add_argument("--label", help="ground truth of a single --input, for the inside/outside ratio")
    explain.add_argument("--output", help="default: the bundle's explain/")
    explain.add_argument("--checkpoint")
    with_data(explain)
    explain.set_defaults(func=cmd_explain)
    export = with_bundle(
        sub.add_parser("export", help="TorchScript (ckpt_export) or ONNX export of the trained network")
    )
    export.add_argument("--checkpoint")
    export.add_argument("--format", choices=("torchscript", "onnx"), default="torchscript")
    export.add_argument("--output", help="default: the bundle's models/model.ts (or model.onnx)")
    export.set_defaults(func=cmd_export)
    check = sub.add_parser("check-data", help="list every problem in a manifest and its files")
    check.add_argument("manifest")
    check.add_argument("--root")
    check.set_defaults(func=cmd_check_data)
    sub.add_parser("networks", help="build every network on a random volume; shapes and sizes").set_defaults(
        func=cmd_networks
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the subcommand; returns the exit status (2 for bad input, 1 for other failures)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except Exception as err:
        if args.debug:
            raise
        found = find_input_error(err)
        if found is not None:
            print(f"error: {found}", file=sys.stderr)
            return 2
        if isinstance(err, FileNotFoundError):
            print(f"error: {err}", file=sys.stderr)
            return 2
        message = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        print(f"error: {message} (run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
