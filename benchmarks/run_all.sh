#!/usr/bin/env bash
# Run every benchmark with its final arguments and keep each JSON in benchmarks/results/.
#
#   benchmarks/run_all.sh                      # all of them: about 2 hours on 2 quiet CPU cores
#   benchmarks/run_all.sh runtimes int8        # only these (names as below)
#   RESULTS_DIR=/tmp/r benchmarks/run_all.sh pipeline_steps   # write the JSONs (and the log) elsewhere
#
# Expected minutes on this 2-core VM when quiet (load < 1.5), estimated from round 2's results (the longest ones
# took 1.5-3x as long under load): runtimes 3, int8 4, runtime_agreement 6, network_step_3d 10, network_step_2d 13,
# network_step_paired 15, unet_step 3, unet_step_1thread 3, position_attention 5, position_attention_kernels 2, position_attention_backward 2,
# whole_volume 5, batch_infer 12, dicom_seg 6, fingerprint 2, pipeline_steps 1, allocator 3, compile 2,
# conv3d_bf16_gradients 1, precision_accuracy 3, gradcam_vs_attention 3, attention_on_off 20 (9 runs of 120 CPU-s,
# two at a time; 45 at load ~8). Total about 2 hours.
# Every timing benchmark measures this machine's fp32/bf16 matmul peaks at its start (most also at its end) with
# benchmarks/common.py matmul_peaks and stores them in its JSON next to its rows' GFLOP/s (attention_on_off: the
# one-thread peaks, its runs use one thread each); conv3d_bf16_gradients and gradcam_vs_attention measure accuracy
# only. Run it on a quiet machine: the peaks and the rows see the same load, but a loaded run's figures are not
# comparable with another run's. The load before and after each benchmark goes to benchmarks/results/run_all.log.
# A failing benchmark is logged and the rest still run; the exit status is non-zero if any failed.
# Then: .venv/bin/python benchmarks/report.py > /tmp/tables.md (the tables of docs/benchmarks.md).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
R=${RESULTS_DIR:-benchmarks/results}
mkdir -p "$R"
LOG=$R/run_all.log
ONLY=" $* "
FAILED=()
KNOWN=()

bench() {  # bench NAME COMMAND...: run COMMAND if NAME is selected, log load and duration
    local name=$1
    shift
    KNOWN+=("$name")
    [[ "$ONLY" == "  " || "$ONLY" == *" $name "* ]] || return 0
    echo "== $name: $* (start $(date -u +%H:%M:%S), load $(cut -d' ' -f1-3 /proc/loadavg))" | tee -a "$LOG"
    local start=$SECONDS
    if "$@"; then
        echo "== $name: done in $((SECONDS - start)) s (load $(cut -d' ' -f1-3 /proc/loadavg))" | tee -a "$LOG"
    else
        echo "== $name: FAILED (exit $?) after $((SECONDS - start)) s" | tee -a "$LOG"
        FAILED+=("$name")
    fi
}

echo "=== run_all $(date -u +%FT%TZ) $(nproc) cores" >>"$LOG"
bench runtimes $PY benchmarks/runtimes.py --json $R/runtimes.json
bench int8 $PY benchmarks/int8.py --rounds 3 --json $R/int8.json
bench runtime_agreement $PY benchmarks/runtime_agreement.py --rounds 3 --json $R/runtime_agreement.json
bench network_step_3d $PY benchmarks/network_step.py --dims 3 --json $R/network_step_3d.json
bench network_step_2d $PY benchmarks/network_step.py --dims 2 --json $R/network_step_2d.json
bench network_step_paired $PY benchmarks/network_step.py --paired --modes train infer --train-shapes bundle 96 --loss mean bundle --allocator tuned --json $R/network_step_paired.json
bench network_step_paired_1thread $PY benchmarks/network_step.py --paired --threads 1 --rounds 3 --repeats 2 --modes train infer --train-shapes bundle 96 --loss mean bundle --allocator tuned --json $R/network_step_paired_1thread.json
bench unet_step $PY benchmarks/unet_step.py --threads 2 --allocator tuned --json $R/unet_step.json
bench unet_step_1thread $PY benchmarks/unet_step.py --threads 1 --allocator tuned --json $R/unet_step_1thread.json
bench position_attention $PY benchmarks/position_attention.py --json $R/position_attention.json
bench position_attention_kernels $PY benchmarks/position_attention.py --kernels --json $R/position_attention_kernels.json
bench position_attention_backward $PY benchmarks/position_attention.py --backward --json $R/position_attention_backward.json
bench whole_volume $PY benchmarks/whole_volume.py --json $R/whole_volume.json
bench batch_infer $PY benchmarks/batch_infer.py --json $R/batch_infer.json
bench dicom_seg $PY benchmarks/dicom_seg.py --json $R/dicom_seg.json
bench fingerprint $PY benchmarks/fingerprint.py --json $R/fingerprint.json
bench pipeline_steps $PY benchmarks/pipeline_steps.py --json $R/pipeline_steps.json
bench allocator $PY benchmarks/forward_details.py allocator --json $R/allocator.json
bench compile $PY benchmarks/forward_details.py compile --json $R/compile.json
bench conv3d_bf16_gradients $PY benchmarks/conv3d_bf16_gradients.py --json $R/conv3d_bf16_gradients.json
bench precision_accuracy $PY benchmarks/precision_accuracy.py --json $R/precision_accuracy.json
bench gradcam_vs_attention $PY benchmarks/gradcam_vs_attention.py --json $R/gradcam_vs_attention.json
bench attention_on_off $PY benchmarks/attention_on_off.py --budget 120 --seeds 3 --workers 2 --json $R/attention_on_off.json

for name in "$@"; do
    [[ " ${KNOWN[*]} " == *" $name "* ]] || { echo "=== unknown benchmark: $name (known: ${KNOWN[*]})" | tee -a "$LOG"; FAILED+=("$name"); }
done
if ((${#FAILED[@]})); then
    echo "=== failed: ${FAILED[*]}" | tee -a "$LOG"
    exit 1
fi
echo "=== all done $(date -u +%FT%TZ)" | tee -a "$LOG"
