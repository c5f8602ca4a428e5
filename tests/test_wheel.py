"""The built wheel works on its own: installed into a fresh virtual environment, run from an unrelated folder, with
the source tree nowhere on the path; it carries the shipped bundles and writes nothing into site-packages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.helpers import oblique_affine, save_nifti

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(cmd)}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """Build the wheel, install it with no dependencies into a new venv that sees this venv's packages (a ``.pth``
    listing its site-packages, so the editable install's finder is not loaded), return paths and a clean env."""
    root = tmp_path_factory.mktemp("wheel")
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(root), str(REPO)],
        REPO,
        dict(os.environ),
    )
    (wheel,) = root.glob("medattn3d-*.whl")
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], root, dict(os.environ))
    python = venv / "bin" / "python"
    site = Path(
        subprocess.check_output([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
        .decode()
        .strip()
    )
    (site / "host_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
        root,
        {**os.environ},
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(
        HOME=str(root / "home"), MEDATTN3D_HOME=str(root / "medattn3d_home"), PATH=f"{venv / 'bin'}:/usr/bin:/bin"
    )
    work = root / "elsewhere"
    work.mkdir()
    return {"wheel": wheel, "python": python, "site": site, "env": env, "cwd": work, "root": root}


def test_wheel_carries_the_shipped_bundles_without_weights_or_outputs(installed):
    names = zipfile.ZipFile(installed["wheel"]).namelist()
    for bundle in ("attention_unet_3d", "attention_unet_2d", "ms_guided_attention_3d", "ms_guided_attention_2d"):
        for part in (
            "configs/inference.json",
            "configs/train.json",
            "configs/metadata.json",
            "docs/README.md",
            "LICENSE",
        ):
            assert f"medattn3d/_bundles/{bundle}/{part}" in names
    assert not [n for n in names if n.endswith((".pt", ".ts")) or "/models/" in n or "/eval/" in n]
    assert not [n for n in names if "/predictions/" in n or ("/explain/" in n and "_bundles" in n)]
    assert any(n.startswith("medattn3d/explain/static/") for n in names)


def test_installed_copy_runs_from_any_folder_and_keeps_outputs_out_of_site_packages(installed):
    python, env, cwd = str(installed["python"]), installed["env"], installed["cwd"]
    version = _run([str(installed["python"].parent / "medattn3d"), "--version"], cwd, env).stdout
    assert version.startswith("medattn3d 0.")
    probe = (
        "import json, medattn3d, medattn3d.bundles as b;"
        "print(json.dumps({'file': medattn3d.__file__, 'checkout': b.is_checkout(),"
        "'bundle': str(b.resolve_bundle('attention_unet_3d'))}))"
    )
    facts = json.loads(_run([python, "-c", probe], cwd, env).stdout)
    assert facts["file"].startswith(str(installed["site"])) and not facts["checkout"]
    assert facts["bundle"] == str(Path(env["MEDATTN3D_HOME"]) / "bundles" / "attention_unet_3d")

    # random weights for the shipped network, saved by the installed package itself
    checkpoint = installed["root"] / "model.pt"
    save = (
        "import sys, torch; from monai.bundle import ConfigParser; import medattn3d.bundles as b;"
        "p = ConfigParser(); p.read_config(str(b.resolve_bundle('attention_unet_3d') / 'configs' / 'inference.json'));"
        "torch.save(p.get_parsed_content('network_def').state_dict(), sys.argv[1])"
    )
    _run([python, "-c", save, str(checkpoint)], cwd, env)
    import numpy as np

    image = save_nifti(
        np.random.default_rng(0).normal(0, 100, (40, 36, 20)).astype(np.float32), oblique_affine(), cwd / "ct.nii.gz"
    )
    before = {p for p in installed["site"].rglob("*") if "__pycache__" not in p.parts}
    medattn3d = str(installed["python"].parent / "medattn3d")
    cmd = [medattn3d, "infer", "--bundle", "attention_unet_3d", "-i", str(image), "-o", "out", "--checkpoint"]
    result = _run([*cmd, str(checkpoint), "--device", "cpu"], cwd, env)
    assert "summary: 1 written, 0 skipped, 0 failed" in result.stdout
    assert (cwd / "out" / "ct_seg.nii.gz").is_file()
    after = {p for p in installed["site"].rglob("*") if "__pycache__" not in p.parts}
    assert after == before  # nothing written into site-packages
    # no weights given: the error names the user folder's models/model.pt and how to train
    missing = subprocess.run(cmd[:-1] + ["--device", "cpu"], cwd=cwd, env=env, capture_output=True, text=True)
    assert missing.returncode == 2
    assert f"{env['MEDATTN3D_HOME']}/bundles/attention_unet_3d/models/model.pt: no trained weights" in missing.stderr


def test_sdist_carries_the_bundles_and_the_build_hook(tmp_path):
    import tarfile

    script = "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))"
    name = _run([sys.executable, "-c", script, str(tmp_path)], REPO, dict(os.environ)).stdout.strip().splitlines()[-1]
    with tarfile.open(tmp_path / name) as archive:
        members = archive.getnames()
    top = name.removesuffix(".tar.gz")
    assert f"{top}/setup.py" in members and f"{top}/bundles/attention_unet_3d/configs/inference.json" in members
    assert f"{top}/bundles/ms_guided_attention_2d/LICENSE" in members
    assert not [m for m in members if m.endswith(".pt") or "/models/" in m or "/eval/" in m]
