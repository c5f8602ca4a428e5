"""The committed bundles are exactly what the planner writes for the demo data (regenerate with
``python -m medattn3d.planning.shipped``), and they keep the demo's documented settings."""

from __future__ import annotations

import json

from medattn3d.bundles import BUNDLE_NAMES, BUNDLES_DIR
from medattn3d.planning.shipped import SHIPPED_OVERRIDES, differences


def test_committed_bundles_equal_a_fresh_generation(tmp_path_factory):
    cache = tmp_path_factory.getbasetemp() / "demo_fingerprint.json"
    stale = differences(cache_file=cache)
    assert stale == [], f"stale generated files (run python -m medattn3d.planning.shipped): {stale}"


def test_every_shipped_bundle_is_generated():
    assert sorted(SHIPPED_OVERRIDES) == sorted(BUNDLE_NAMES)


def test_demo_settings_are_recorded_as_overrides():
    plan = json.loads((BUNDLES_DIR / "attention_unet_3d" / "plan.json").read_text(encoding="utf-8"))
    assert plan["values"]["roi_size"] == [64, 64, 32] and plan["values"]["pixdim"] == [2.5, 2.5, 4.0]
    assert plan["overrides"]["roi_size"]["value"] == [64, 64, 32]
    assert plan["values"]["max_epochs"] == 40 and plan["values"]["val_interval"] == 5
    train = json.loads((BUNDLES_DIR / "attention_unet_3d" / "configs" / "train.json").read_text(encoding="utf-8"))
    assert train["dataset_dir"] == "$str(medattn3d.data.demo.default_demo_dir())"
