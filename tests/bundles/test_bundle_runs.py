"""Each bundle end to end through ``python -m monai.bundle`` (train -> evaluate -> inference -> ckpt_export),
resume after a killed run, and a 2-process DDP run on CPU (gloo). Slow: run with ``pytest -m slow``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from tests.bundles.conftest import tiny_overrides

pytestmark = pytest.mark.slow


def _cli_args(overrides: dict) -> list[str]:
    args: list[str] = []
    for key, value in overrides.items():
        args += [f"--{key}", json.dumps(value) if not isinstance(value, str) else value]
    return args


def saved_epoch_of(checkpoint: Path) -> int:
    """Epochs completed in a training checkpoint (ignite stores the iteration count and the epoch length)."""
    trainer = torch.load(checkpoint, weights_only=False)["trainer"]
    return trainer["iteration"] // trainer["epoch_length"]


def bundle_run(
    bundle: Path,
    configs: list[str],
    overrides: dict,
    command: str = "run",
    timeout: int = 600,
    launcher: list[str] | None = None,
) -> subprocess.CompletedProcess:
    files = [str(bundle / "configs" / c) for c in configs]
    config_arg = files[0] if len(files) == 1 else json.dumps(files)
    cmd = (launcher or [sys.executable, "-m"]) + [
        "monai.bundle",
        command,
        "--config_file",
        config_arg,
        "--meta_file",
        str(bundle / "configs" / "metadata.json"),
        "--bundle_root",
        str(bundle),
    ]
    result = subprocess.run(cmd + _cli_args(overrides), capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_train_evaluate_infer_export(bundle_copy, tiny_data):
    name, bundle = bundle_copy
    overrides = tiny_overrides(name, tiny_data)
    bundle_run(bundle, ["train.json"], {**overrides, "max_epochs": 2, "val_interval": 1})
    models = bundle / "models"
    assert (models / "model.pt").is_file() and (models / "checkpoint_last.pt").is_file()
    assert json.loads((models / "model_metric.json").read_text(encoding="utf-8"))["key_metric"] == "val_mean_dice"
    assert saved_epoch_of(models / "checkpoint_last.pt") == 2

    bundle_run(bundle, ["train.json", "evaluate.json"], overrides)
    summary = (bundle / "eval" / "val_mean_dice_summary.csv").read_text(encoding="utf-8")
    labels = json.loads((tiny_data / "dataset.json").read_text(encoding="utf-8"))["labels"]
    foreground = [labels[k] for k in sorted(labels, key=int) if k != "0"]
    assert [line.split(",")[0] for line in summary.splitlines()] == ["class", *foreground, "mean"]

    bundle_run(bundle, ["inference.json"], overrides)
    test_image = tiny_data / "imagesTs" / "case_003.nii.gz"
    prediction = nib.load(str(bundle / "predictions" / "case_003_seg.nii.gz"))
    source = nib.load(str(test_image))
    assert prediction.shape == source.shape and np.allclose(prediction.affine, source.affine, atol=1e-4)
    classes = json.loads((bundle / "configs" / "inference.json").read_text(encoding="utf-8"))["num_classes"]
    assert classes == len(json.loads((tiny_data / "dataset.json").read_text(encoding="utf-8"))["labels"])
    assert set(np.unique(np.asarray(prediction.dataobj)).tolist()) <= set(range(classes))

    bundle_run(bundle, ["inference.json", "explain.json"], overrides)
    explain = bundle / "explain"
    maps = sorted(explain.glob("case_002_attention_*.nii.gz"))  # the validation case
    assert len(maps) == (8 if name.startswith("ms_") else 3)
    validation_image = nib.load(str(tiny_data / "imagesTr" / "case_002.nii.gz"))
    assert all(nib.load(str(m)).shape == validation_image.shape for m in maps)
    assert (explain / "index.html").is_file() and (explain / "case_002_montage.png").is_file()

    export = {k: v for k, v in overrides.items() if k.startswith("network_def")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "monai.bundle",
            "ckpt_export",
            "network_def",
            "--filepath",
            str(models / "model.ts"),
            "--ckpt_file",
            str(models / "model.pt"),
            "--meta_file",
            str(bundle / "configs" / "metadata.json"),
            "--config_file",
            str(bundle / "configs" / "inference.json"),
            "--bundle_root",
            str(bundle),
            *_cli_args({**export, "dataset_dir": str(tiny_data)}),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    scripted = torch.jit.load(str(models / "model.ts"))
    size = (1, 1, *overrides["roi_size"])
    assert scripted(torch.randn(size)).shape == (1, classes, *size[2:])


@pytest.fixture
def attention_unet_copy(tmp_path):
    import shutil

    from medattn3d.bundles import BUNDLES_DIR

    target = tmp_path / "attention_unet_3d"
    shutil.copytree(
        BUNDLES_DIR / "attention_unet_3d", target, ignore=shutil.ignore_patterns("eval", "predictions", "*.pt", "*.ts")
    )
    return target


def test_killed_training_resumes_from_its_last_checkpoint(attention_unet_copy, tiny_data):
    bundle = attention_unet_copy
    overrides = {**tiny_overrides("attention_unet_3d", tiny_data), "max_epochs": 50, "val_interval": 100}
    files = str(bundle / "configs" / "train.json")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "monai.bundle",
            "run",
            "--config_file",
            files,
            "--bundle_root",
            str(bundle),
            *_cli_args(overrides),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    checkpoint = bundle / "models" / "checkpoint_last.pt"
    deadline = time.time() + 300
    while time.time() < deadline and not checkpoint.is_file():
        time.sleep(0.5)
    time.sleep(1.5)  # let it write a few more epochs, then kill it mid-run
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert checkpoint.is_file(), "no checkpoint was written before the kill"
    saved_epoch = saved_epoch_of(checkpoint)
    assert 1 <= saved_epoch < 50
    result = bundle_run(bundle, ["train.json"], {**overrides, "max_epochs": saved_epoch + 1})
    assert f"resumed from {checkpoint} at epoch {saved_epoch}" in result.stdout + result.stderr
    assert saved_epoch_of(checkpoint) == saved_epoch + 1


def test_ddp_two_processes_on_cpu(attention_unet_copy, tmp_path):
    from medattn3d.data.demo import generate_demo_dataset

    bundle = attention_unet_copy
    data = tmp_path / "data"  # validation shards need at least one case per rank (MONAI's DistributedSampler)
    generate_demo_dataset(data, num_train=2, num_val=2, num_test=0, shape=(48, 48, 32))
    overrides = {**tiny_overrides("attention_unet_3d", data), "max_epochs": 2, "val_interval": 1}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517", "-m"]
    bundle_run(bundle, ["train.json", "multi_gpu_train.json"], overrides, launcher=torchrun)
    assert saved_epoch_of(bundle / "models" / "checkpoint_last.pt") == 2
    checkpoint = torch.load(bundle / "models" / "checkpoint_last.pt", weights_only=False)
    assert not any(k.startswith("module.") for k in checkpoint["model"])  # saved unwrapped: loads without DDP
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser.update({k: v for k, v in overrides.items() if k.startswith("network_def")})
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))

    # multi_gpu_evaluate.json: the validation cases shared by the two processes, one metrics file from rank 0
    bundle_run(bundle, ["train.json", "evaluate.json", "multi_gpu_evaluate.json"], overrides, launcher=torchrun)
    raw = (bundle / "eval" / "val_mean_dice_raw.csv").read_text(encoding="utf-8").strip().splitlines()
    assert len(raw) == 1 + 2  # header + both validation cases


def test_onnx_export_matches_pytorch(tmp_path):
    onnx = pytest.importorskip("onnx", reason="ONNX export needs the 'export' extra (onnx, onnxscript)")
    pytest.importorskip("onnxscript", reason="ONNX export needs the 'export' extra (onnx, onnxscript)")
    from monai.bundle import ConfigParser
    from onnx.reference import ReferenceEvaluator

    from medattn3d import cli
    from medattn3d.bundles import BUNDLES_DIR

    parser = ConfigParser()  # the shipped bundle's own network (classes, strides), random weights
    parser.read_config(str(BUNDLES_DIR / "attention_unet_3d" / "configs" / "inference.json"))
    net = parser.get_parsed_content("network_def").eval()
    torch.save(net.state_dict(), tmp_path / "model.pt")
    target = tmp_path / "model.onnx"
    assert (
        cli.main(["export", "--format", "onnx", "--checkpoint", str(tmp_path / "model.pt"), "--output", str(target)])
        == 0
    )
    model = onnx.load(str(target))
    onnx.checker.check_model(model)
    x = torch.randn(1, 1, 64, 64, 32)
    (got,) = ReferenceEvaluator(model).run(None, {model.graph.input[0].name: x.numpy()})
    with torch.no_grad():
        expected = net(x).numpy()
    assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-3
