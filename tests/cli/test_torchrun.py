"""Batch inference under ``torchrun``: two gloo processes share a folder's cases, each case written once."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.conftest import ct


@pytest.mark.slow
def test_two_gloo_processes_split_a_folder(tmp_path, tiny_bundle):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(5):
        ct(inputs / f"c{i}.nii.gz", seed=i)
    out = tmp_path / "out"
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "medattn3d.cli", "infer"]
    cmd += ["--bundle", str(tiny_bundle), "-i", str(inputs), "-o", str(out), "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert sorted(p.name for p in out.glob("*_seg.nii.gz")) == [f"c{i}_seg.nii.gz" for i in range(5)]
    done = {rank: re.findall(rf"\[rank {rank}\] \[\d/\d\] (c\d)\.nii\.gz", result.stdout) for rank in (0, 1)}
    assert sorted(done[0] + done[1]) == [f"c{i}" for i in range(5)] and done[0] and done[1]
    assert result.stdout.count("summary: 5 written, 0 skipped, 0 failed") == 1  # rank 0 prints the whole run's
