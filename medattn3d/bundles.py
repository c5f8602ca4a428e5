"""Find the bundles and run their configs through ``monai.bundle`` (the CLI's only way to do work)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

BUNDLES_DIR = Path(__file__).resolve().parent.parent / "bundles"
BUNDLE_NAMES = ("attention_unet_3d", "attention_unet_2d", "ms_guided_attention_3d", "ms_guided_attention_2d")


def bundle_path(name: str) -> Path:
    """A bundle folder: ``name`` itself when it is a folder with ``configs/``, else ``bundles/<name>``."""
    candidate = Path(name)
    if (candidate / "configs").is_dir():
        return candidate.resolve()
    path = BUNDLES_DIR / name
    if not (path / "configs").is_dir():
        known = ", ".join(sorted(p.name for p in BUNDLES_DIR.glob("*") if (p / "configs").is_dir()))
        raise FileNotFoundError(f"{name}: no such bundle (known: {known}; or give a bundle folder)")
    return path


def run_bundle(bundle: Path, configs: list[str], **overrides: Any) -> Any:
    """``python -m monai.bundle run`` on ``bundle`` with ``configs`` merged in order and ``overrides`` applied."""
    from monai.bundle import run

    files = [str(bundle / "configs" / c) for c in configs]
    return run(
        config_file=files,
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=str(bundle / "configs" / "logging.conf"),
        bundle_root=str(bundle),
        **overrides,
    )


def read_config(bundle: Path, config: str = "inference.json") -> dict[str, Any]:
    """A bundle config as plain JSON (for looking up literal values such as ``num_classes``)."""
    return json.loads((bundle / "configs" / config).read_text())
