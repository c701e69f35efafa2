#!/usr/bin/env bash
# Host work per step, this tree (A) against another checkout (B, e.g. `git archive COMMIT | tar -x -C DIR`) on one
# GPU, Qwen3-0.6B with dummy weights: `bench offline` on many short requests (1,024 of 16-128 tokens, 16-256 out:
# host-bound at 200-256 running requests) in ROUNDS (3) rounds of A then B, and the nano-vllm workload once per
# side (device-bound: must not lose) and a middle one (512 requests of 128-1,024 tokens, 32-512 out); then A's
# short workload pass by pass with the host's functions under cProfile (offline_steps.py --host-profile;
# SKIP_PROFILE=1: not). Each side has a cache root of its own, filled by a first short run that is not
# counted (ONE_CACHE=1: one root for both, so B's first run reuses what A's built where their kernels are the same).
# About 5 minutes. Usage: bash benchmarks/gpu_host_ab.sh B_DIR [OUTDIR]
set -uo pipefail
source "$(dirname "$0")/ab_helpers.sh"  # ab_dirs, side_dir
ab_dirs "$1" "${2:-host-ab}"
short=(--num-requests 1024 --input-len 16 128 --output-len 16 256)
run() {  # SIDE TAG ARGS...: one `bench offline` run with SIDE's code; stderr appended to OUT/runs.log
  local side=$1 tag=$2; shift 2
  local dir; dir=$(side_dir "$side")
  local cache=$here/.cache-host-$side
  [ -n "${ONE_CACHE:-}" ] && cache=$here/.cache-host
  (cd "$dir" && TIERLM_CACHE_DIR=$cache PYTHONPATH=$dir timeout 150 python3 -m tierlm bench \
    offline --model builtin:qwen3-0.6b --load-format dummy --skip-tokenizer-init --json "$@" \
    > "$out/$tag.json" 2>> "$out/runs.log") || echo "$tag failed"
  case $tag in cold-*) rm -f "$out/$tag.json" ;; esac
}
for side in A B; do run $side cold-$side "${short[@]}"; done
for round in $(seq "${ROUNDS:-3}"); do
  for side in A B; do run $side "short-$side-r$round" "${short[@]}"; done
done
for side in A B; do run $side "nano-$side"; done
for side in A B; do run $side "mid-$side" --num-requests 512 --input-len 128 1024 --output-len 32 512; done
python3 benchmarks/offline_summary.py "$out"/short-*.json "$out"/nano-*.json "$out"/mid-*.json
[ -n "${SKIP_PROFILE:-}" ] && exit 0
prof_cache=$here/.cache-host-A
[ -n "${ONE_CACHE:-}" ] && prof_cache=$here/.cache-host
(TIERLM_CACHE_DIR=$prof_cache PYTHONPATH=$here timeout 150 python3 benchmarks/offline_steps.py "${short[@]}" \
  --host-profile "${ROWS:-45}" > "$out/host-profile-A.txt" 2>&1) || echo "host profile failed"
grep -A10 "^passes" "$out/host-profile-A.txt"
