#!/usr/bin/env bash
# Launches without the JIT's per-call work (`kernels.launch.CachedLaunch` for the token pick and the decode graph's
# staging launch; host arithmetic instead of `triton.cdiv` / `triton.next_power_of_2` in every kernel's wrapper),
# this tree (A) against a checkout from before (B, e.g. `git archive COMMIT | tar -x -C DIR`), on one GPU:
#   the launcher's, the pick's, the step metadata's and the captured passes' tests on the GPU, then
#   gpu_engine_check.py (the fast path against the torch path, token for token); bench_launch_host.py (host us
#   per launch: JIT, CachedLaunch, torch); bench_sampler.py; decode steps B A B A (profile_engine.py, Qwen3-0.6B
#   at batch 1, 64 and 256, one cache root for both sides, filled by a first untimed run).
# PARTS (default "tests bench steps") picks what runs; PAIRS (2) decode-step pairs. Every part's output is kept in
# OUTDIR as it is written (a run cut short keeps what finished). About 7 minutes with a filled cache root, over
# 10 on a fresh machine (the first engine start builds and tunes about 180 kernels): split it with PARTS there.
# Usage: [PARTS=...] [PAIRS=2] bash benchmarks/gpu_launch_host.sh B_DIR [OUTDIR]
set -uo pipefail
source "$(dirname "$0")/ab_helpers.sh"  # ab_dirs, side_dir
ab_dirs "$1" "${2:-launch-host}"
print_versions
parts=${PARTS:-tests bench steps}
if [[ $parts == *tests* ]]; then
  PYTHONPATH=$here timeout 200 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_launch.py \
    tests/kernels/test_race_sample.py tests/kernels/test_step_metadata.py tests/engine/test_mixed_graph.py \
    > "$out/tests.txt" 2>&1; tail -n 3 "$out/tests.txt"
  PYTHONPATH=$here timeout 300 python3 benchmarks/gpu_engine_check.py --prompts 16 --max-tokens 64 --archs llama,qwen3 \
    > "$out/engine-check.txt" 2>&1; echo "gpu_engine_check exit $?"
  tail -n 6 "$out/engine-check.txt"
fi
if [[ $parts == *bench* ]]; then
  PYTHONPATH=$here timeout 60 python3 benchmarks/bench_launch_host.py --batch 1 > "$out/launch-host.txt" 2>&1
  head -n 9 "$out/launch-host.txt"
  PYTHONPATH=$here timeout 90 python3 benchmarks/bench_sampler.py --batches 1,64,256 > "$out/sampler.txt" 2>&1
  tail -n 13 "$out/sampler.txt"
fi
root=$here/.cache-launch-shared
steps() {  # SIDE TAG: one profile_engine run with SIDE's code and the shared cache root
  local dir; dir=$(side_dir "$1")
  (cd "$dir" && TIERLM_CACHE_DIR=$root PYTHONPATH=$dir timeout 200 python3 benchmarks/profile_engine.py \
    --prefill-len 0 --steps 200 --batches 1,64,256 > "$out/$2-$1.txt" 2>&1) || echo "$2 $1 failed (exit $?)"
  echo "$2 $1:"; grep -A3 "batch *ms/step" "$out/$2-$1.txt"
}
if [[ $parts == *steps* ]]; then
  steps A fill > /dev/null
  for pair in $(seq 1 "${PAIRS:-2}"); do steps B "qwen$pair"; steps A "qwen$pair"; done
fi
