"""tune_cpu_allocator: freed tensor memory is reused (the kernel's page-fault counter shows it); users can opt out."""

import json
import os
import subprocess
import sys

import pytest

# A small 3D conv stack run repeatedly (8 MiB activations, as in a network's forward), in a fresh process; reports
# the minor page faults of ten steady-state passes.
PROBE = """
import json, resource, sys, torch
from medattn3d.engine.runtime import tune_cpu_allocator
applied = tune_cpu_allocator() if sys.argv[1] == "tuned" else False
conv = torch.nn.Conv3d(8, 8, 3, padding=1)
x = torch.randn(1, 8, 64, 64, 64)
def step():
    with torch.no_grad():
        y = x
        for _ in range(4):
            y = torch.relu(conv(y))
step(); step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print(json.dumps({"applied": applied, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _probe(mode: str, env: dict | None = None) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True, env=env, timeout=120
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_tuned_allocator_stops_faulting_in_freed_memory():
    default, tuned = _probe("default"), _probe("tuned")
    assert tuned["applied"]
    # 8 activations of 8 MiB per pass: about 2 000 faults of 4 KiB pages each when fresh from the kernel, none reused
    assert default["faults"] > 10_000
    assert tuned["faults"] < default["faults"] / 5


def test_environment_variable_opts_out():
    env = {**os.environ, "MEDATTN3D_DEFAULT_ALLOCATOR": "1"}
    assert _probe("tuned", env)["applied"] is False
