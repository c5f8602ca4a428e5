"""Whole-volume benchmark: a CT-sized volume end to end (load, preprocess, sliding-window inference, invert, save),
voxels per second and peak memory, our pipeline vs the same pipeline with MONAI's AttentionUnet.

    .venv/bin/python benchmarks/whole_volume.py --json benchmarks/results/whole_volume.json

Both use the CT preset (RAS, 1.5 x 1.5 x 2 mm, HU window), a 96^3 Gaussian sliding window with overlap 0.25, the
inverse of the preprocessing and a NIfTI writer; only the network, precision/layout and allocator differ: ours =
medattn3d AttentionUNet under PrecisionInferer as the bundles' inference.json runs it (precision auto: bf16 and bf16
weights where bf16 beats fp32 here, else fp32; channels-last, BatchNorm folded, in-place activations), in a process
with ``tune_cpu_allocator()`` applied as the medattn3d CLI and bundles do; peer = monai.networks.nets.AttentionUnet
at the same widths in fp32 (MONAI's default), default allocator; a third row gives the peer our allocator setting
too, to show that setting's share. Weights are random: this measures speed, not accuracy. Each pipeline runs in a
fresh process.

More peers and rows: MONAI's AttentionUnet under bf16 autocast + channels-last (the two lines a MONAI user can add);
ours in process with the OpenVINO runtime (the bundles' ``runtime: auto`` on a CPU with OpenVINO installed; its
converted model cached beforehand, as every run after a bundle's first finds it) and with the opt-in INT8 model
(``--runtime openvino-int8``; quantized here on random windows, which sets its speed, not its accuracy); and ours as
``medattn3d infer`` runs it end to end (one command from a shell: process start, imports, bundle parse, network
build and weight preparation, header check, then the same steps) with ``--runtime torch`` and with the bundles'
default ``auto``, the latter twice: the first run of a set of weights (converts and caches the OpenVINO model) and
every later run. The bundle is a copy of the shipped 3D bundle given the same network, window and spacing as the
other rows. The end-to-end rows are compared with the peers both in process (their pipeline alone, the conservative
ratio) and as a script run from a shell (``total_s`` of the peer plus its process start and imports, ``script_s``:
like for like with a command). Last, a folder of ``--folder`` copies of the volume (default 4), as a study's worth of
scans is segmented: MONAI's two pipelines as one script each and one ``medattn3d infer`` command, where a process
start and its imports are paid once for all the volumes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    add_throughput,
    bf16_skip_reason,
    machine,
    matmul_peaks,
    network_gflop,
    peak_rss_bytes,
    print_table,
    run_case_in_subprocess,
    sliding_windows,
    write_json,
)

CHANNELS = (16, 32, 64, 128, 256)
# (pipeline, glibc allocator setting): the peer as MONAI runs it, ours as our CLI and bundles run it, and the peer
# given our allocator setting too, so the share of the speed-up that setting brings is visible
PIPELINES = (
    ("MONAI AttentionUnet", False),
    ("ours", True),
    ("ours, OpenVINO runtime", True),
    ("ours, OpenVINO INT8 runtime (opt-in)", True),
    ("MONAI AttentionUnet", True),
    ("MONAI AttentionUnet bf16 + channels-last", False),
)
CLI_RUNS = (("torch", "torch"), ("auto", "auto, first run of these weights"), ("auto", "auto"))


def make_volume(path: Path, shape: tuple[int, int, int]) -> None:
    """A CT-sized volume: the demo generator's anatomy, resampled onto a 0.8 x 0.8 x 2.5 mm grid and stored as
    scanners and archives store CT, int16 Hounsfield units (rounds 1 and 2 stored float32)."""
    import nibabel as nib
    import torch
    import torch.nn.functional as F

    from medattn3d.data.demo import synthesize_case

    image, _, _ = synthesize_case(0)
    volume = F.interpolate(torch.from_numpy(image)[None, None], size=shape, mode="trilinear", align_corners=False)
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    hounsfield = volume[0, 0].round().clamp(-1024, 3071).to(torch.int16).numpy()
    nib.save(nib.Nifti1Image(hounsfield, affine), str(path))


def run_pipeline(case: dict) -> dict:
    import torch
    from monai.inferers import SlidingWindowInferer
    from monai.networks.nets import AttentionUnet

    from medattn3d.data import ct_transforms
    from medattn3d.engine.precision import PrecisionInferer, prepare_for_inference
    from medattn3d.networks import AttentionUNet
    from medattn3d.outputs import prediction_writer

    if case["tuned_allocator"]:
        from medattn3d.engine.runtime import tune_cpu_allocator

        tune_cpu_allocator()
    torch.manual_seed(0)
    if case["pipeline"].startswith("ours"):
        network = AttentionUNet(3, 1, 4, channels=CHANNELS, strides=(2, 2, 2, 2)).eval()
        runtime = (
            "openvino-int8" if "INT8" in case["pipeline"] else "openvino" if "OpenVINO" in case["pipeline"] else "torch"
        )
        network = prepare_for_inference(network, case["precision"], runtime=runtime, ir_path=case.get("ir"))
        if runtime != "torch":  # convert (or find the cached model) outside the timing, as a later run does
            with torch.no_grad():
                network(torch.zeros(1, 1, 96, 96, 96))
        window = SlidingWindowInferer((96, 96, 96), sw_batch_size=case["sw_batch_size"], overlap=0.25, mode="gaussian")
        inferer = PrecisionInferer(window, precision=case["precision"], channels_last=True)
    else:
        network = AttentionUnet(3, 1, 4, channels=CHANNELS, strides=(2, 2, 2, 2)).eval()
        inferer = SlidingWindowInferer((96, 96, 96), sw_batch_size=case["sw_batch_size"], overlap=0.25, mode="gaussian")
        if "bf16" in case["pipeline"]:
            inferer = PrecisionInferer(inferer, precision="bf16", channels_last=True)
    phases = {"load_preprocess_s": 0.0, "infer_s": 0.0, "invert_save_s": 0.0}
    preprocessing = ct_transforms("infer", pixdim=(1.5, 1.5, 2.0))
    for path in case.get("inputs", [case["input"]]):  # a folder's volumes one after another, as a script runs them
        start = time.perf_counter()
        data = preprocessing({"image": path})
        loaded = time.perf_counter()
        with torch.no_grad():
            data["pred"] = inferer(data["image"][None], network)[0]
        inferred = time.perf_counter()
        prediction_writer(preprocessing, case["output"])(data)
        end = time.perf_counter()
        for name, seconds in zip(phases, (loaded - start, inferred - loaded, end - inferred), strict=True):
            phases[name] += seconds
    return {
        "total_s": sum(phases.values()),
        **phases,
        "peak_rss_mib": peak_rss_bytes() / 2**20,
        "preprocessed_shape": list(data["image"].shape[1:]),
    }


def make_cli_bundle(target: Path, sw_batch_size: int) -> Path:
    """A copy of the shipped 3D Attention U-Net bundle with the other rows' network, window, batch of windows,
    spacing and CT window, and random weights."""
    import torch
    from monai.bundle import ConfigParser

    from medattn3d.bundles import shipped_bundles_dir

    shutil.copytree(
        shipped_bundles_dir() / "attention_unet_3d", target, ignore=shutil.ignore_patterns("models", "eval")
    )
    for name in ("inference.json", "train.json"):
        path = target / "configs" / name
        config = json.loads(path.read_text(encoding="utf-8"))
        config["network_def"].update({"channels": list(CHANNELS), "strides": [2, 2, 2, 2]})
        config.update(
            {"roi_size": [96, 96, 96], "pixdim": [1.5, 1.5, 2.0], "sw_batch_size": sw_batch_size, "num_classes": 4}
        )
        config["class_names"] = {str(i): name for i, name in enumerate(["background", "liver", "spleen", "kidney"])}
        path.write_text(json.dumps(config, indent=4))
    parser = ConfigParser()
    parser.read_config(str(target / "configs" / "inference.json"))
    (target / "models").mkdir(exist_ok=True)
    torch.manual_seed(0)
    torch.save(parser.get_parsed_content("network_def").state_dict(), target / "models" / "model.pt")
    return target


def run_cli(bundle: Path, volume: Path, output: Path, runtime: str, cache: Path) -> dict:
    """Wall time of one ``medattn3d infer`` command, as a user runs it (``cache``: its OpenVINO model cache)."""
    import subprocess

    command = [str(Path(sys.executable).parent / "medattn3d"), "infer", "--bundle", str(bundle)]
    command += ["-i", str(volume), "-o", str(output), "--runtime", runtime, "--quiet"]
    start = time.perf_counter()
    env = {**os.environ, "MEDATTN3D_CACHE_DIR": str(cache)}
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    total = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "medattn3d infer failed")
    return {"total_s": total}


def start_and_import_floor() -> dict:
    """What every MONAI pipeline run from a shell pays before its first voxel: Python start and ``import monai``
    (torch, and MONAI's eager import of its subpackages and their optional dependencies). Median of 3."""
    import subprocess

    times = []
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import monai"], check=True)
        times.append(time.perf_counter() - start)
    seconds = sorted(times)[1]
    reason = "process start and imports: no arithmetic"
    return {
        "pipeline": "floor: Python start + `import monai`",
        "total_s": seconds,
        "script_s": seconds,
        "gflop_reason": reason,
    }


def folder_rows(work: Path, volume: Path, bundle: Path, args: argparse.Namespace) -> list[dict]:
    """A folder of ``args.folder`` copies of the volume, as a user segments a study's worth of scans: MONAI's fp32 and
    bf16 + channels-last pipelines as one script each (one process start and import, then the volumes one after
    another, timed from the shell), and one ``medattn3d infer`` command on the folder (its OpenVINO model cached by
    the single-volume runs before)."""
    folder = work / "folder"
    folder.mkdir()
    copies = []
    for index in range(args.folder):
        copies.append(folder / f"ct_{index}.nii.gz")
        shutil.copyfile(volume, copies[-1])
    rows = []
    peers = ["MONAI AttentionUnet"] + ([] if bf16_skip_reason() else ["MONAI AttentionUnet bf16 + channels-last"])
    for pipeline in peers:
        case = {"pipeline": pipeline, "tuned_allocator": False, "input": str(copies[0])}
        case |= {"inputs": [str(c) for c in copies], "output": str(work / f"folder_{len(rows)}")}
        case |= {"precision": args.precision, "sw_batch_size": args.sw_batch_size}
        started = time.perf_counter()
        row = {"pipeline": f"{pipeline}, a folder of {args.folder} volumes as one script"}
        row |= run_case_in_subprocess(__file__, case)
        row["script_s"] = time.perf_counter() - started
        rows.append(row)
        print(f"{row['pipeline']}: {row['script_s']:.1f} s", flush=True)
    label = f"ours, `medattn3d infer` on a folder of {args.folder} volumes end to end"
    row = {"pipeline": label, **run_cli(bundle, folder, work / "cli_folder", "auto", work / "cli_cache")}
    row["script_s"] = row["total_s"]
    rows.append(row)
    print(f"{label}: {row['total_s']:.1f} s", flush=True)
    return rows


def window_gflop() -> dict[str, float]:
    """GFLOP of one 96^3 window through our network and through MONAI's (the same widths; ours does more: the
    authors' double convolution per decoder level)."""
    import torch
    from monai.networks.nets import AttentionUnet

    from medattn3d.networks import AttentionUNet

    x = torch.zeros(1, 1, 96, 96, 96)
    return {
        "ours": network_gflop(AttentionUNet(3, 1, 4, channels=CHANNELS, strides=(2, 2, 2, 2)).eval(), x),
        "MONAI": network_gflop(AttentionUnet(3, 1, 4, channels=CHANNELS, strides=(2, 2, 2, 2)).eval(), x),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", nargs=3, type=int, default=[512, 512, 128])
    parser.add_argument("--precision", default="auto", help="ours: auto, bf16 or fp32")
    parser.add_argument(
        "--sw-batch-size", type=int, default=2, help="windows per network call, every row (the bundles' planned value)"
    )
    parser.add_argument(
        "--folder", type=int, default=4, help="volumes in the folder rows (one command or script for all; 0: none)"
    )
    parser.add_argument("--json")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_pipeline(json.loads(args.case))))
        return
    work = Path(tempfile.mkdtemp(prefix="medattn3d-bench-"))
    os.environ["MEDATTN3D_CACHE_DIR"] = str(work / "cache")  # the in-process OpenVINO row's model cache
    try:
        peaks = matmul_peaks()
        per_window = window_gflop()
        volume = work / "ct.nii.gz"
        make_volume(volume, tuple(args.shape))
        voxels = int(np.prod(args.shape))
        from int8 import export_ir  # the same network and seed, quantized on random windows (speed only)

        ir = str(export_ir(work, 96))
        rows, skipped = [], []
        for pipeline, tuned_allocator in PIPELINES:
            if "bf16" in pipeline and (reason := bf16_skip_reason()):
                skipped.append({"pipeline": pipeline, "skipped": reason})
                continue
            case = {
                "pipeline": pipeline,
                "tuned_allocator": tuned_allocator,
                "input": str(volume),
                "output": str(work / pipeline.replace(" ", "_")),
                "precision": args.precision,
                "sw_batch_size": args.sw_batch_size,
                "ir": ir,
            }
            label = pipeline + (" + allocator setting" if tuned_allocator and not pipeline.startswith("ours") else "")
            started = time.perf_counter()
            row = {"pipeline": label, **run_case_in_subprocess(__file__, case)}
            # the pipeline as a script: process start + imports too (not for the OpenVINO row, whose untimed first
            # conversion into its fresh cache falls inside that process)
            row["script_s"] = None if "OpenVINO" in label else time.perf_counter() - started
            row["voxels_per_s"] = voxels / row["total_s"]
            rows.append(row)
            print(f"{label}: {row['total_s']:.1f} s", flush=True)
        bundle = make_cli_bundle(work / "bundle", args.sw_batch_size)
        for index, (runtime, name) in enumerate(CLI_RUNS):
            label = f"ours, `medattn3d infer --runtime {name}` end to end"
            row = {"pipeline": label, **run_cli(bundle, volume, work / f"cli_{index}", runtime, work / "cli_cache")}
            row["script_s"] = row["total_s"]
            row["voxels_per_s"] = voxels / row["total_s"]
            rows.append(row)
            print(f"{label}: {row['total_s']:.1f} s", flush=True)
        rows.append(start_and_import_floor())
        folder_runs = folder_rows(work, volume, bundle, args) if args.folder > 1 else []
        windows = sliding_windows(rows[1]["preprocessed_shape"], (96, 96, 96), 0.25)
        for row in rows[:-1]:  # in process: GFLOP/s of the inference step; end to end: of the whole command
            gflop = windows * per_window["ours" if row["pipeline"].startswith("ours") else "MONAI"]
            add_throughput(row, gflop, peaks, seconds=row.get("infer_s", row["total_s"]))
        bf16_peer = next((r for r in rows if "bf16" in r["pipeline"]), None)
        for row in rows[1:-1]:
            row["speedup"] = row["voxels_per_s"] / rows[0]["voxels_per_s"]
            if bf16_peer:
                row["speedup_vs_bf16_peer"] = row["voxels_per_s"] / bf16_peer["voxels_per_s"]
            if row["script_s"]:
                row["speedup_vs_script"] = rows[0]["script_s"] / row["script_s"]
                if bf16_peer:
                    row["speedup_vs_bf16_script"] = bf16_peer["script_s"] / row["script_s"]
        for row in rows:
            if row["pipeline"].startswith("ours") and "load_preprocess_s" in row:
                row["io_share"] = (row["load_preprocess_s"] + row["invert_save_s"]) / row["total_s"]
        for row in folder_runs:
            gflop = args.folder * windows * per_window["ours" if row["pipeline"].startswith("ours") else "MONAI"]
            add_throughput(row, gflop, peaks, seconds=row["script_s"])
            row["voxels_per_s"] = args.folder * voxels / row["script_s"]
        ours_folder = folder_runs[-1:] if folder_runs else []
        for row in ours_folder:
            row["speedup_vs_script"] = folder_runs[0]["script_s"] / row["script_s"]
            if "bf16" in folder_runs[1]["pipeline"]:
                row["speedup_vs_bf16_script"] = folder_runs[1]["script_s"] / row["script_s"]
        rows += folder_runs + skipped
        print(f"\nvolume {'x'.join(map(str, args.shape))} ({voxels / 1e6:.1f} M voxels), {machine()}")
        print_table(
            rows,
            [
                "pipeline",
                "total_s",
                "script_s",
                "load_preprocess_s",
                "infer_s",
                "invert_save_s",
                "gflop",
                "gflop_per_s",
                "pct_bf16_peak",
                "voxels_per_s",
                "peak_rss_mib",
                "speedup",
                "speedup_vs_bf16_peer",
                "speedup_vs_script",
                "speedup_vs_bf16_script",
                "io_share",
            ],
        )
        payload = {"benchmark": "whole_volume", "machine": machine(), "shape": args.shape, "windows": windows}
        payload["sw_batch_size"] = args.sw_batch_size
        payload["folder_volumes"] = args.folder
        payload.update(matmul_peaks=peaks, matmul_peaks_end=matmul_peaks(), window_gflop=per_window, rows=rows)
        write_json(args.json, payload)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
