"""A tiny bundle with random weights (a copy of the shipped 3D Attention U-Net, two levels, 16^3 patches)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from medattn3d.bundles import BUNDLES_DIR
from tests.helpers import oblique_affine, save_nifti

# the shipped bundle's own classes (the demo's labels); the tiny copy keeps them
CLASS_NAMES: dict[str, str] = json.loads(
    (BUNDLES_DIR / "attention_unet_3d" / "configs" / "inference.json").read_text(encoding="utf-8")
)["class_names"]


def make_tiny_bundle(target: Path, in_channels: int = 1, spatial_dims: int = 3) -> Path:
    """Copy attention_unet_3d's (or _2d's) configs, shrink its network and grid (``in_channels`` input channels),
    save random weights as models/model.pt."""
    from monai.bundle import ConfigParser

    source = BUNDLES_DIR / f"attention_unet_{spatial_dims}d"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("models", "eval", "pred*"))
    for name in ("inference.json", "train.json"):
        config_file = target / "configs" / name
        config = json.loads(config_file.read_text(encoding="utf-8"))
        config["network_def"].update({"channels": [4, 8, 16], "strides": [2, 2], "deep_supervision": False})
        config.update({"roi_size": [16] * spatial_dims, "pixdim": [4.0, 4.0, 4.0], "precision": "fp32"})
        config["in_channels"] = in_channels
        config["normalization"] = config["normalization"] * in_channels  # one entry per channel
        config_file.write_text(json.dumps(config, indent=4))
    config_file = target / "configs" / "inference.json"
    parser = ConfigParser()
    parser.read_config(str(config_file))
    (target / "models").mkdir(exist_ok=True)
    torch.manual_seed(0)
    torch.save(parser.get_parsed_content("network_def").state_dict(), target / "models" / "model.pt")
    return target


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("bundles") / "tiny")


def ct(path: Path, shape=(24, 20, 12), affine=None, seed: int = 0) -> Path:
    """A small random CT-like NIfTI volume with an oblique affine."""
    image = np.random.default_rng(seed).normal(0, 100, shape).astype(np.float32)
    return save_nifti(image, oblique_affine() if affine is None else affine, path)
