"""Shared fixtures for bundle tests: a tiny demo dataset and per-bundle overrides that keep runs short."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from medattn3d.bundles import BUNDLE_NAMES, BUNDLES_DIR
from medattn3d.data.demo import generate_demo_dataset

TINY_NETWORKS = {
    "attention_unet_3d": {"network_def#channels": [4, 8, 16, 32, 64]},
    "attention_unet_2d": {"network_def#channels": [4, 8, 16, 32, 64]},
    "ms_guided_attention_3d": {"network_def#backbone": "resnet10", "network_def#feature_channels": 8},
    "ms_guided_attention_2d": {"network_def#backbone": "resnet10", "network_def#feature_channels": 8},
}


def tiny_overrides(name: str, data: Path) -> dict:
    """Overrides for a seconds-long run of bundle ``name`` on the tiny dataset in ``data``."""
    # the guided network needs every axis a multiple of 32 (its ResNet's total downsampling)
    roi = [32, 32] if name.endswith("2d") else [32, 32, 32] if name.startswith("ms_") else [32, 32, 16]
    return {
        "dataset_dir": str(data),
        "datalist": str(data / "dataset.json"),
        "roi_size": roi,
        "num_samples": 2,
        "sw_batch_size": 2,
        **TINY_NETWORKS[name],
    }


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    generate_demo_dataset(root, num_train=2, num_val=1, num_test=1, shape=(48, 48, 32))
    return root


@pytest.fixture(params=BUNDLE_NAMES)
def bundle_copy(request, tmp_path) -> tuple[str, Path]:
    """A scratch copy of one bundle, so runs never write into the repository."""
    name = request.param
    target = tmp_path / name
    shutil.copytree(BUNDLES_DIR / name, target, ignore=shutil.ignore_patterns("eval", "predictions", "*.pt", "*.ts"))
    return name, target
