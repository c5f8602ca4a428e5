"""Planned bundles of the tiny MSD-layout datasets, written once per test session (planning is read-only after)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.planning.datasets import DATASETS


@pytest.fixture(scope="session")
def datasets(tmp_path_factory) -> dict[str, Path]:
    """Each tiny dataset written once: name -> dataset folder."""
    root = tmp_path_factory.mktemp("datasets")
    folders = {}
    for name, writer in DATASETS.items():
        writer(root / name)
        folders[name] = root / name
    return folders


@pytest.fixture(scope="session")
def planned(datasets, tmp_path_factory):
    """``planned(dataset, template, **overrides) -> (bundle, plan.json dict)``, memoised for the session."""
    from medattn3d.planning import plan_bundle

    root = tmp_path_factory.mktemp("planned")
    done: dict[tuple, tuple[Path, dict]] = {}

    def plan(dataset: str, template: str, **overrides) -> tuple[Path, dict]:
        key = (dataset, template, json.dumps(overrides, sort_keys=True))
        if key not in done:
            out = root / f"{dataset}-{template}-{len(done)}"
            plan_bundle(datasets[dataset], out, template=template, overrides=overrides, workers=1, progress=False)
            done[key] = (out, json.loads((out / "plan.json").read_text(encoding="utf-8")))
        return done[key]

    return plan
