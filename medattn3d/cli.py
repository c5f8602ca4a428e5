"""The ``medattn3d`` command: parse the arguments, call the module that does the job, print what happened.

Bad input ends with ``error: <file>: <problem>`` and exit status 2; any other failure with exit status 1 (``--debug``
shows the traceback). Bundle configs execute code (MONAI ``$`` expressions): run only bundles you trust.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medattn3d import __version__
from medattn3d.errors import InputError, find_input_error

QUIET, NORMAL, VERBOSE = 0, 1, 2


def parse_overrides(items: Sequence[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` pairs as bundle config overrides; values parse as JSON when they can (``3``, ``[1, 2]``)."""
    overrides: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(item, "--set needs KEY=VALUE")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def run_overrides(
    device: str = "auto", precision: str | None = None, sets: Sequence[str] | None = None, runtime: str | None = None
) -> dict:
    """Config overrides from the flags the run commands share: ``--device``, ``--precision``, ``--runtime``,
    ``--set`` (applied last, so it wins)."""
    from medattn3d.engine.runner import device_expression

    overrides: dict[str, Any] = {}
    if device_expression(device) is not None:
        overrides["device"] = device_expression(device)
    if precision:
        overrides["precision"] = precision
    if runtime:
        overrides["runtime"] = runtime
    overrides.update(parse_overrides(sets))
    return overrides


def data_overrides(dataset_dir: str | None, datalist: str | None) -> dict[str, Any]:
    """``dataset_dir``/``datalist`` overrides as absolute paths (only those given)."""
    overrides: dict[str, Any] = {}
    if dataset_dir:
        overrides["dataset_dir"] = str(Path(dataset_dir).resolve())
    if datalist:
        overrides["datalist"] = str(Path(datalist).resolve())
    return overrides


def weights_of(bundle: Path, checkpoint: str | None, spec: str) -> Path:
    """``checkpoint`` if given (it must exist), else the bundle's ``models/model.pt`` (it must exist too)."""
    path = Path(checkpoint) if checkpoint else bundle / "models" / "model.pt"
    if checkpoint and not path.is_file():
        raise InputError(path, "checkpoint not found")
    if not path.is_file():
        raise InputError(
            path, f"no trained weights: train first (medattn3d train --bundle {spec}) or pass --checkpoint"
        )
    return path.resolve()


# --- the jobs, with real arguments (the subcommands and `demo` call these) -------------------------------------


def train(
    spec: str, overrides: dict[str, Any], multi_gpu: bool = False, fresh: bool = False, quiet: bool = True
) -> Path:
    """Train bundle ``spec`` (resuming from its last checkpoint unless ``fresh``); returns the bundle folder.

    A shipped bundle trains only on the demo data: user data needs a bundle planned for it (``medattn3d plan``)."""
    from medattn3d.bundles import is_shipped, resolve_bundle, run_bundle

    bundle = resolve_bundle(spec)
    if is_shipped(bundle) and ({"dataset_dir", "datalist"} & overrides.keys()):
        data = overrides.get("dataset_dir") or overrides.get("datalist")
        raise InputError(
            spec,
            f"is a shipped bundle and trains on the demo data only; plan a bundle for your data first: "
            f"medattn3d plan --dataset-dir {data} --out my_bundle, then medattn3d train --bundle ./my_bundle",
        )
    configs = ["train.json", "multi_gpu_train.json"] if multi_gpu else ["train.json"]
    if fresh:
        overrides = {**overrides, "resume": False}
    run_bundle(bundle, configs, quiet=quiet, **overrides)
    models = bundle / "models"
    print(f"trained: weights in {models / 'model.pt'}, resumable state in {models / 'checkpoint_last.pt'}")
    return bundle


def evaluate(spec: str, overrides: dict[str, Any], multi_gpu: bool = False, quiet: bool = True) -> list:
    """Dice per class of the bundle's weights on its validation cases; prints the table, returns its rows."""
    from medattn3d.bundles import bundle_class_names, resolve_bundle, run_bundle
    from medattn3d.training.report import dice_table

    bundle = resolve_bundle(spec)
    weights_of(bundle, None, spec)
    configs = ["train.json", "evaluate.json"]
    if multi_gpu:
        extra = bundle / "configs" / "multi_gpu_evaluate.json"
        if not extra.is_file():
            raise InputError(extra, "missing: this bundle has no multi-GPU evaluation config (re-plan it)")
        configs.append(extra.name)
    run_bundle(bundle, configs, quiet=quiet, **overrides)
    if _rank() != 0:
        return []
    eval_dir = Path(overrides.get("output_dir", bundle / "eval"))
    table = dice_table(eval_dir, bundle_class_names(bundle, overrides))
    for name, value in table:
        print(f"  Dice {name:<20s} {value:.4f}")
    print(f"metrics: {eval_dir / 'metrics.csv'}, per case and class: {eval_dir / 'val_mean_dice_raw.csv'}")
    return table


def infer(
    spec: str,
    inputs: str | Path,
    output: str | Path,
    checkpoint: str | None = None,
    overrides: dict[str, Any] | None = None,
    formats: Sequence[str] = ("nifti",),
    save_probabilities: bool = False,
    resume: bool = False,
    num_parts: int = 1,
    part_id: int = 0,
    fail_fast: bool = False,
    series_uid: str | None = None,
    verbosity: int = NORMAL,
) -> int:
    """Segment every volume behind ``inputs`` into ``output`` (see :mod:`medattn3d.engine.runner`); returns the exit
    status: 0 when every case was written or skipped, 1 when any failed. Under ``torchrun`` each process takes its
    share of the cases (rank and world size as ``part_id``/``num_parts``)."""
    from medattn3d.bundles import quiet_monai, resolve_bundle
    from medattn3d.data.inputs import discover_inputs, group_channel_files
    from medattn3d.engine.runner import BundleModel, InferenceRun, distributed_part, gather_summaries
    from medattn3d.outputs.naming import check_formats

    quiet_monai(verbosity < VERBOSE)
    formats = check_formats(formats)
    bundle = resolve_bundle(spec)
    weights = weights_of(bundle, checkpoint, spec)
    paths = discover_inputs(inputs)
    overrides = dict(overrides or {})
    if series_uid:
        overrides["series_uid"] = series_uid
    distributed = distributed_part() if num_parts == 1 else None
    if distributed:
        num_parts, part_id = distributed
        overrides = _join_process_group(overrides)
    model = BundleModel.from_bundle(bundle, weights, overrides)
    paths, channel_files = group_channel_files(paths, model.in_channels)  # case_0000.nii.gz, case_0001.nii.gz, ...
    prefix = f"[rank {part_id}] " if distributed else ""
    if model.info.get("int8_tip") and verbosity >= NORMAL and part_id == 0:
        print(
            f"note: bf16 is no faster than fp32 on this CPU, so OpenVINO runs the network in fp32; an INT8 model runs "
            f"{model.info['int8_tip']} faster per window on CPUs like it (check its Dice on your validation cases): "
            f"medattn3d export --bundle {spec} "
            "--format openvino-int8, then add --runtime openvino-int8",
            flush=True,
        )
    run = InferenceRun(
        model,
        Path(output).absolute(),
        formats=formats,
        save_probabilities=save_probabilities,
        resume=resume,
        fail_fast=fail_fast,
        series_uid=series_uid,
        print_line=(lambda line: print(prefix + line, flush=True)) if verbosity >= NORMAL else None,
        channel_files=channel_files,
    )
    summary = gather_summaries(run.run(paths, num_parts, part_id))
    if distributed:
        import torch.distributed as dist

        dist.destroy_process_group()
    if part_id == 0 or not distributed:
        for line in summary.lines():
            print(line, file=sys.stderr if line.startswith("  failed") else sys.stdout)
    return 1 if summary.failed else 0


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _join_process_group(overrides: dict[str, Any]) -> dict[str, Any]:
    """Join ``torchrun``'s process group (gloo on CPU, NCCL on GPUs); each process uses its local GPU."""
    import os

    import torch
    import torch.distributed as dist

    on_gpu = torch.cuda.is_available() and "cpu" not in str(overrides.get("device", ""))
    if on_gpu:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        overrides = {**overrides, "device": f"$torch.device('cuda:{local}')"}
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if on_gpu else "gloo")
    return overrides


def explain(
    spec: str,
    overrides: dict[str, Any],
    inputs: str | None = None,
    label: str | None = None,
    output: str | None = None,
    checkpoint: str | None = None,
    num_parts: int = 1,
    part_id: int = 0,
    quiet: bool = True,
) -> None:
    """Attention maps, montages and an HTML index for ``inputs`` (default: the bundle's validation cases)."""
    from medattn3d.bundles import bundle_config, resolve_bundle, run_bundle
    from medattn3d.data.inputs import discover_inputs, group_channel_files
    from medattn3d.engine.runner import select_part

    bundle = resolve_bundle(spec)
    overrides = {**overrides, "checkpoint": str(weights_of(bundle, checkpoint, spec))}
    if output:
        overrides["output_dir"] = str(Path(output).resolve())
    if inputs:
        # a case stored one file per channel (case_0000.nii.gz, case_0001.nii.gz, ...) is one input, as for infer
        channels = int(bundle_config(bundle, overrides).get_parsed_content("in_channels"))
        cases, channel_files = group_channel_files(discover_inputs(inputs), channels)
        paths = select_part(cases, num_parts, part_id)
        if label and len(paths) != 1:
            raise InputError(inputs, "--label needs exactly one input volume")
        overrides["input_paths"] = [[str(f) for f in channel_files[p]] if p in channel_files else str(p) for p in paths]
        # no labels: one None per input (an override of None would leave the config's validation labels in place)
        overrides["label_paths"] = [str(Path(label).resolve())] if label else [None] * len(paths)
    run_bundle(bundle, ["inference.json", "explain.json"], quiet=quiet, **overrides)
    from medattn3d.explain import summary_lines

    output_dir = Path(overrides.get("output_dir", bundle / "explain"))
    print("\n".join(summary_lines(json.loads((output_dir / "attention_summary.json").read_text(encoding="utf-8")))))


def export(
    spec: str,
    overrides: dict[str, Any],
    fmt: str = "torchscript",
    checkpoint: str | None = None,
    output: str | None = None,
    resume: bool = False,
    quiet: bool = True,
    calibration_patches: int = 32,
) -> Path:
    """TorchScript (``monai.bundle.ckpt_export``), ONNX (``onnx_export``, needs the ``export`` extra) or an INT8
    OpenVINO IR calibrated on ``calibration_patches`` training patches (:mod:`medattn3d.engine.quantize`, needs
    ``openvino`` and ``nncf``; served by ``--runtime openvino-int8``)."""
    from monai.bundle import ckpt_export, onnx_export

    from medattn3d.bundles import quiet_monai, read_config, resolve_bundle

    quiet_monai(quiet)
    bundle = resolve_bundle(spec)
    weights = weights_of(bundle, checkpoint, spec)
    default = {"onnx": "model.onnx", "openvino-int8": "model_int8.xml"}.get(fmt, "model.ts")
    target = Path(output) if output else bundle / "models" / default
    if resume and target.is_file() and (fmt != "openvino-int8" or _current_int8(target)):
        print(f"kept {target} (--continue)")
        return target
    if fmt == "openvino-int8":
        from medattn3d.engine.quantize import export_int8

        start = time.perf_counter()
        export_int8(bundle, weights, target, calibration_patches, overrides)
        print(
            f"wrote {target} (+ .bin; INT8, {calibration_patches} calibration patches, "
            f"{time.perf_counter() - start:.0f} s); use it with --runtime openvino-int8"
        )
        return target
    common = {
        "net_id": "network_def",
        "filepath": str(target),
        "ckpt_file": str(weights),
        "meta_file": str(bundle / "configs" / "metadata.json"),
        "config_file": str(bundle / "configs" / "inference.json"),
        "bundle_root": str(bundle),
        **overrides,
    }
    if fmt == "onnx":
        config = read_config(bundle)
        onnx_export(**common, use_trace=True, input_shape=[1, int(config.get("in_channels", 1)), *config["roi_size"]])
    else:
        ckpt_export(**common)
    print(f"wrote {target}")
    return target


def demo(spec: str, max_epochs: int | None = None, verbosity: int = NORMAL) -> int:
    """Generate the demo data, train, evaluate, predict the demo's test volumes, explain the validation cases."""
    from medattn3d.bundles import resolve_bundle
    from medattn3d.data.demo import default_demo_dir

    bundle = resolve_bundle(spec)
    quiet = verbosity < VERBOSE
    start = time.time()
    print(f"[1/4] training {bundle.name} on the demo data in {default_demo_dir()} (resumes if interrupted)")
    train(spec, {"max_epochs": max_epochs} if max_epochs else {}, quiet=quiet)
    print("[2/4] evaluating the trained weights on the validation cases")
    evaluate(spec, {}, quiet=quiet)
    print("[3/4] predicting the demo's test volumes")
    predictions = bundle / "predictions"
    code = infer(spec, default_demo_dir() / "imagesTs", predictions, verbosity=verbosity)
    print("[4/4] attention maps of the validation cases")
    explain(spec, {}, quiet=quiet)
    print(f"demo finished in {(time.time() - start) / 60:.1f} min.")
    print(f"  weights:               {bundle / 'models' / 'model.pt'}")
    print(f"  metrics and curves:    {bundle / 'eval'} (training_report.png, val_mean_dice_*.csv)")
    print(f"  predictions:           {predictions}")
    print(f"  attention maps:        {bundle / 'explain' / 'index.html'}")
    return code


# --- subcommands: arguments -> one call -------------------------------------------------------------------------


def _verbosity(args: argparse.Namespace) -> int:
    return QUIET if args.quiet else VERBOSE if args.verbose else NORMAL


def cmd_plan(args: argparse.Namespace) -> int:
    from medattn3d import planning

    out = planning.plan_bundle(
        args.dataset_dir,
        args.out,
        datalist=args.datalist,
        template=args.bundle,
        fold=args.fold,
        overrides=parse_overrides(args.set),
        workers=args.workers,
        progress=not args.quiet,
    )
    print(f"planned: {out} (train it: medattn3d train --bundle {_as_path(out)})")
    return 0


def _as_path(path: Path | str) -> str:
    """``path`` written so that ``--bundle`` reads it as a folder (``./name`` for a bare name)."""
    text = str(path)
    return text if ("/" in text or text.startswith(".")) else f"./{text}"


def cmd_train(args: argparse.Namespace) -> int:
    overrides = {**data_overrides(args.dataset_dir, args.datalist), **run_overrides(args.device, None, args.set)}
    if args.max_epochs:
        overrides["max_epochs"] = args.max_epochs
    train(args.bundle, overrides, multi_gpu=args.multi_gpu, fresh=args.fresh, quiet=args.quiet)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    data_dir, datalist = args.dataset_dir, args.datalist
    if args.input:
        data_dir, datalist = (data_dir, args.input) if Path(args.input).is_file() else (args.input, datalist)
    overrides = {**data_overrides(data_dir, datalist), **run_overrides(args.device, args.precision, args.set)}
    if args.output:
        overrides["output_dir"] = str(Path(args.output).resolve())
    evaluate(args.bundle, overrides, multi_gpu=args.multi_gpu, quiet=_verbosity(args) < VERBOSE)
    return 0


def _current_int8(xml: Path) -> bool:
    """True when the INT8 IR at ``xml`` is whole (its ``.bin`` beside it) and made with today's recipe (an older one
    is exported again by ``--continue``)."""
    if not xml.with_suffix(".bin").is_file():
        return False
    import openvino as ov

    from medattn3d.engine.quantize import outdated_recipe

    reason = outdated_recipe(ov.Core().read_model(str(xml)))
    if reason is not None:
        print(f"exporting {xml} again: made with an older recipe ({reason})")
    return reason is None


def cmd_infer(args: argparse.Namespace) -> int:
    formats = [f.strip() for item in (args.format or ["nifti"]) for f in item.split(",") if f.strip()]
    return infer(
        args.bundle,
        args.input,
        args.output,
        checkpoint=args.checkpoint,
        overrides=run_overrides(args.device, args.precision, args.set, args.runtime),
        formats=formats,
        save_probabilities=args.save_probabilities,
        resume=args.resume,
        num_parts=args.num_parts,
        part_id=args.part_id,
        fail_fast=args.fail_fast,
        series_uid=args.series_uid,
        verbosity=_verbosity(args),
    )


def cmd_explain(args: argparse.Namespace) -> int:
    overrides = {
        **data_overrides(args.dataset_dir, args.datalist),
        **run_overrides(args.device, args.precision, args.set),
    }
    explain(
        args.bundle,
        overrides,
        inputs=args.input,
        label=args.label,
        output=args.output,
        checkpoint=args.checkpoint,
        num_parts=args.num_parts,
        part_id=args.part_id,
        quiet=_verbosity(args) < VERBOSE,
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    overrides = run_overrides(args.device, args.precision, args.set)
    export(
        args.bundle,
        overrides,
        args.format,
        args.input,
        args.output,
        args.resume,
        _verbosity(args) < VERBOSE,
        args.calibration_patches,
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    return demo(args.bundle, args.max_epochs, _verbosity(args))


def cmd_check_data(args: argparse.Namespace) -> int:
    from medattn3d.data.check import main as check_main

    root = ["--root", args.root] if args.root else []
    return check_main([args.manifest, *root, "--spatial-dims", str(args.spatial_dims)])


def cmd_networks(args: argparse.Namespace) -> int:
    from medattn3d.summary import main as networks_summary

    networks_summary()
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = [f"medattn3d {__version__}"]
    for package in ("monai", "torch"):
        try:
            parts.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            parts.append(f"{package} missing")
    return ", ".join(parts)


# --- the parser ------------------------------------------------------------------------------------------------

BUNDLE_HELP = "a shipped bundle's name, or a bundle folder given as a path (./my_bundle); configs execute code"


def _bundle(p: argparse.ArgumentParser, default: str | None = "attention_unet_3d") -> None:
    p.add_argument("--bundle", default=default, help=BUNDLE_HELP + f" (default: {default})")
    p.set_defaults(bundle_checked_first=True)


def _data(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset-dir", help="data root (default: the embedded demo data)")
    p.add_argument("--datalist", help="Decathlon-style manifest (default: DATASET_DIR/dataset.json)")


def _run_options(p: argparse.ArgumentParser, split: bool = False) -> None:
    """The flags infer, evaluate, explain and export share."""
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), help="default: the bundle's (auto)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any bundle config override (JSON value)")
    p.add_argument("--continue", dest="resume", action="store_true", help="skip work whose outputs are complete")
    if split:
        p.add_argument("--num-parts", type=int, default=1, help="split the inputs into N parts (processes/machines)")
        p.add_argument("--part-id", type=int, default=0, help="the part this process runs (0..N-1)")
    loud = p.add_mutually_exclusive_group()
    loud.add_argument("-q", "--quiet", action="store_true", help="only the summary and errors")
    loud.add_argument("-v", "--verbose", action="store_true", help="also MONAI's logs and its config-trust warning")


def build_parser() -> argparse.ArgumentParser:
    """The ``medattn3d`` argument parser (every subcommand and flag is in docs/cli.md)."""
    parser = argparse.ArgumentParser(prog="medattn3d", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    demo_p = sub.add_parser("demo", help="train, evaluate, predict and explain on the embedded demo data")
    _bundle(demo_p)
    demo_p.add_argument("--max-epochs", type=int)
    loud = demo_p.add_mutually_exclusive_group()
    loud.add_argument("-q", "--quiet", action="store_true")
    loud.add_argument("-v", "--verbose", action="store_true")
    demo_p.set_defaults(func=cmd_demo)

    plan = sub.add_parser("plan", help="a self-contained bundle for your dataset (fingerprint, plan, configs)")
    plan.add_argument("--dataset-dir", required=True, help="the dataset folder (MSD layout)")
    plan.add_argument("--datalist", help="default: DATASET_DIR/dataset.json")
    plan.add_argument("--bundle", default="attention_unet_3d", help="template: a shipped bundle's name")
    plan.add_argument("--out", required=True, help="the new bundle folder")
    plan.add_argument("--fold", type=int, default=0, help="validation fold of the seeded 5-fold split")
    plan.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a planned value (JSON value)")
    plan.add_argument("--workers", type=int, default=2, help="processes reading the data")
    plan.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    plan.set_defaults(func=cmd_plan)

    train_p = sub.add_parser("train", help="train a bundle (resumes from models/checkpoint_last.pt)")
    _bundle(train_p)
    _data(train_p)
    train_p.add_argument("--max-epochs", type=int)
    train_p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    train_p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any bundle config override")
    train_p.add_argument("--fresh", action="store_true", help="start over (the old checkpoint is kept, renamed)")
    train_p.add_argument("--multi-gpu", action="store_true", help="merge multi_gpu_train.json (run under torchrun)")
    train_p.add_argument("-q", "--quiet", action="store_true", help="hide MONAI's logs (epoch lines still print)")
    train_p.set_defaults(func=cmd_train)

    evaluate_p = sub.add_parser("evaluate", help="Dice per class of the trained weights on the validation cases")
    _bundle(evaluate_p)
    evaluate_p.add_argument("-i", "--input", help="a datalist file or a dataset folder (default: the bundle's)")
    evaluate_p.add_argument("-o", "--output", help="folder for the metrics CSVs (default: the bundle's eval/)")
    _data(evaluate_p)
    evaluate_p.add_argument("--multi-gpu", action="store_true", help="merge multi_gpu_evaluate.json (torchrun)")
    _run_options(evaluate_p)
    evaluate_p.set_defaults(func=cmd_evaluate)

    infer_p = sub.add_parser("infer", help="segment volumes; outputs in each input's geometry")
    _bundle(infer_p)
    infer_p.add_argument("-i", "--input", required=True, help="a volume, a DICOM series folder or a folder of them")
    infer_p.add_argument("-o", "--output", required=True, help="folder for the outputs (<name>_seg.nii.gz, ...)")
    infer_p.add_argument("--checkpoint", help="weights (default: the bundle's models/model.pt)")
    infer_p.add_argument(
        "--format",
        action="extend",
        nargs="+",
        metavar="FORMAT",
        help="nifti (default), nrrd, dicom-seg; several: space- or comma-separated, or the flag repeated",
    )
    infer_p.add_argument("--save-probabilities", action="store_true", help="also <name>_probabilities.nii.gz")
    infer_p.add_argument("--series-uid", help="DICOM SeriesInstanceUID, when a folder holds several series")
    infer_p.add_argument("--fail-fast", action="store_true", help="stop at the first failing case")
    infer_p.add_argument(
        "--runtime",
        choices=("auto", "torch", "openvino", "openvino-int8", "onnxruntime"),
        help="default: the bundle's runtime (auto: OpenVINO on CPU when installed; openvino-int8: the INT8 model "
        "from `medattn3d export --format openvino-int8`)",
    )
    _run_options(infer_p, split=True)
    infer_p.set_defaults(func=cmd_infer)

    explain_p = sub.add_parser("explain", help="attention maps as NIfTI, PNG montages and an HTML index")
    _bundle(explain_p)
    explain_p.add_argument("-i", "--input", help="volume(s) to explain (default: the datalist's validation cases)")
    explain_p.add_argument("-o", "--output", help="default: the bundle's explain/")
    explain_p.add_argument("--label", help="ground truth of a single --input, for the inside/outside ratio")
    explain_p.add_argument("--checkpoint", help="weights (default: the bundle's models/model.pt)")
    _data(explain_p)
    _run_options(explain_p, split=True)
    explain_p.set_defaults(func=cmd_explain)

    export_p = sub.add_parser(
        "export", help="TorchScript (ckpt_export), ONNX, or INT8 OpenVINO export of the trained network"
    )
    _bundle(export_p)
    export_p.add_argument("-i", "--input", "--checkpoint", dest="input", help="weights (default: models/model.pt)")
    export_p.add_argument(
        "-o", "--output", help="default: the bundle's models/model.ts (model.onnx, model_int8.xml + .bin)"
    )
    export_p.add_argument("--format", choices=("torchscript", "onnx", "openvino-int8"), default="torchscript")
    export_p.add_argument(
        "--calibration-patches",
        type=int,
        default=32,
        metavar="N",
        help="openvino-int8: training patches to calibrate the INT8 ranges on (default 32)",
    )
    _run_options(export_p)
    export_p.set_defaults(func=cmd_export)

    check = sub.add_parser("check-data", help="list every problem in a manifest and its files")
    check.add_argument("manifest")
    check.add_argument("--root")
    check.add_argument(
        "--spatial-dims", type=int, choices=(2, 3), default=3, help="2: for a 2D bundle (single slices are fine)"
    )
    check.set_defaults(func=cmd_check_data)
    sub.add_parser("networks", help="build every network on a random volume; shapes and sizes").set_defaults(
        func=cmd_networks
    )
    return parser


def _root_message(err: BaseException) -> str:
    """The first cause of ``err`` as one line, ``Type: message``: MONAI's config parser wraps a failure in errors whose
    last line is a fragment of the expression it was evaluating, not what went wrong."""
    root, seen = err, {id(err)}
    while (root.__cause__ or root.__context__) is not None and id(root.__cause__ or root.__context__) not in seen:
        root = root.__cause__ or root.__context__
        seen.add(id(root))
    text = str(root).strip()
    return f"{type(root).__name__}: {text.splitlines()[-1]}" if text else type(root).__name__


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the subcommand; returns the exit status (2 for bad input, 1 for other failures)."""
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "bundle_checked_first", False) and args.bundle is not None:
            from medattn3d.bundles import resolve_bundle

            resolve_bundle(args.bundle)  # a wrong name or folder is told before MONAI's seconds of imports
        return int(args.func(args) or 0)
    except Exception as err:
        if args.debug:
            raise
        problems = getattr(err, "problems", None)
        if problems:  # a dataset check: every problem, one per line (once: str(err) holds them too)
            where = getattr(err, "path", "the dataset")
            count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
            print(f"error: {where}: {count} found, nothing was written:", file=sys.stderr)
            for line in problems:
                print(f"  {line}", file=sys.stderr)
            return 2
        found = find_input_error(err)
        if found is not None:
            print(f"error: {found}", file=sys.stderr)
            return 2
        if isinstance(err, FileNotFoundError):
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"error: {_root_message(err)} (run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
