#!/usr/bin/env bash
# Run every benchmark and keep its JSON in benchmarks/results/ (about 30 minutes on 2 CPU cores).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p benchmarks/results
PY=.venv/bin/python
$PY benchmarks/network_step.py --dims 3 --json benchmarks/results/network_step_3d.json
$PY benchmarks/network_step.py --dims 2 --json benchmarks/results/network_step_2d.json
$PY benchmarks/position_attention.py --json benchmarks/results/position_attention.json
$PY benchmarks/whole_volume.py --json benchmarks/results/whole_volume.json
$PY benchmarks/conv3d_bf16_gradients.py --json benchmarks/results/conv3d_bf16_gradients.json
$PY benchmarks/forward_details.py allocator --json benchmarks/results/allocator.json
$PY benchmarks/forward_details.py compile --json benchmarks/results/compile.json
$PY benchmarks/pipeline_steps.py --json benchmarks/results/pipeline_steps.json
