"""Bundles resolve safely: a bare name is a shipped bundle only; installed copies run from the user folder."""

from __future__ import annotations

import shutil

import pytest

from medattn3d import __version__, bundles, cli
from medattn3d.bundles import BUNDLES_DIR
from medattn3d.errors import InputError


def test_bare_name_is_a_shipped_bundle_even_when_a_folder_of_that_name_is_here(tmp_path, monkeypatch):
    decoy = tmp_path / "attention_unet_3d" / "configs"
    decoy.mkdir(parents=True)
    (decoy / "inference.json").write_text('{"run": ["$print(1)"]}')
    monkeypatch.chdir(tmp_path)
    resolved = bundles.resolve_bundle("attention_unet_3d")
    assert resolved == bundles.shipped_bundles_dir() / "attention_unet_3d"
    assert bundles.resolve_bundle("./attention_unet_3d") == (tmp_path / "attention_unet_3d").resolve()


def test_unknown_names_and_non_bundle_folders_are_refused_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_bundle").mkdir()
    with pytest.raises(InputError, match=r"my_bundle: no such bundle .*given as a path, e.g. \./my_bundle"):
        bundles.resolve_bundle("my_bundle")
    with pytest.raises(InputError, match="is not a bundle folder"):
        bundles.resolve_bundle("./my_bundle")
    assert cli.main(["evaluate", "--bundle", "unet9"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unet9: no such bundle (known: attention_unet_2d, attention_unet_3d" in err[0]


def test_a_wrong_bundle_is_told_before_monai_is_imported(tmp_path):
    """The bundle is checked first: a typo costs no MONAI import (seconds) before its one-line error."""
    import subprocess
    import sys

    script = (
        "import sys; from medattn3d.cli import main; "
        "rc = main(['infer', '--bundle', 'unet9', '-i', 'a.nii.gz', '-o', 'out']); "
        "print('monai imported:', 'monai' in sys.modules); sys.exit(rc)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, check=False)
    assert done.returncode == 2 and "monai imported: False" in done.stdout
    assert "unet9: no such bundle" in done.stderr and not (tmp_path / "out").exists()


def test_is_shipped_tells_shipped_bundles_from_planned_ones(tiny_bundle):
    assert bundles.is_shipped(bundles.shipped_bundles_dir() / "attention_unet_2d")
    assert not bundles.is_shipped(tiny_bundle)


def test_installed_copy_runs_from_the_user_folder_and_refreshes_configs_on_upgrade(tmp_path, monkeypatch):
    packaged = tmp_path / "site" / "medattn3d" / "_bundles"
    shutil.copytree(
        bundles.BUNDLES_DIR / "attention_unet_2d",
        packaged / "attention_unet_2d",
        ignore=shutil.ignore_patterns("models", "eval", "predictions", "explain"),
    )
    monkeypatch.setattr(bundles, "PACKAGE_DIR", packaged.parent)
    monkeypatch.setenv("MEDATTN3D_HOME", str(tmp_path / "home"))
    assert not bundles.is_checkout() and bundles.shipped_bundles_dir() == packaged
    run_copy = bundles.resolve_bundle("attention_unet_2d")
    assert run_copy == tmp_path / "home" / "bundles" / "attention_unet_2d"
    assert (run_copy / "configs" / "inference.json").read_text(encoding="utf-8") == (
        packaged / "attention_unet_2d" / "configs" / "inference.json"
    ).read_text(encoding="utf-8")
    assert (run_copy / "LICENSE").is_file() and (run_copy / "models").is_dir()
    assert bundles.is_shipped(run_copy)
    (run_copy / "models" / "model.pt").write_bytes(b"weights")
    (run_copy / "configs" / "inference.json").write_text("{}")  # an old version's config
    (run_copy / bundles.VERSION_STAMP).write_text("0.0.1\n")
    assert bundles.resolve_bundle("attention_unet_2d") == run_copy
    assert (run_copy / "configs" / "inference.json").read_text(encoding="utf-8") != "{}"  # refreshed
    assert (run_copy / "models" / "model.pt").read_bytes() == b"weights"  # trained weights kept
    assert (run_copy / bundles.VERSION_STAMP).read_text(encoding="utf-8").strip() == __version__


def test_home_defaults_to_the_users_data_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("MEDATTN3D_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert bundles.home_dir() == tmp_path / ".local" / "share" / "medattn3d"


def test_training_a_shipped_bundle_on_user_data_is_refused_and_names_plan(tmp_path, capsys):
    code = cli.main(["train", "--bundle", "attention_unet_3d", "--dataset-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "is a shipped bundle" in err[0] and "medattn3d plan --dataset-dir" in err[0]
    assert cli.main(["train", "--bundle", "attention_unet_3d", "--set", f"datalist={tmp_path}/d.json"]) == 2


def test_quiet_monai_hides_info_logs_and_the_trust_warning():
    import logging
    import warnings

    bundles.quiet_monai(True)
    assert logging.getLogger("monai.bundle.scripts").getEffectiveLevel() >= logging.WARNING
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        bundles.quiet_monai(True)
        warnings.warn("parsing config_file x.json: any ...", UserWarning, stacklevel=1)
    assert not caught
    bundles.quiet_monai(False)
    assert logging.getLogger("monai.bundle.scripts").getEffectiveLevel() == logging.INFO
    bundles.quiet_monai(True)


def test_quiet_runs_turn_off_the_progress_bars(tmp_path):
    assert bundles.quiet_overrides(BUNDLES_DIR / "attention_unet_3d", ["train.json", "evaluate.json"]) == {
        "show_progress": False
    }
    # a bundle without the switch (written by hand, or planned before it) gets no override it would not know
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "train.json").write_text('{"train": {"dataset": {"_target_": "CacheDataset"}}}')
    assert bundles.quiet_overrides(tmp_path, ["train.json"]) == {}
