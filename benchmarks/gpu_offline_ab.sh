#!/usr/bin/env bash
# Qwen3-0.6B's offline throughput (nano-vllm workload, temperature 0.6, dummy weights), this tree (A) against
# another checkout (B, e.g. `git archive COMMIT | tar -x -C DIR`) on one GPU, in the order A B A B (each side's
# first run fills its cache root and is not counted), then the batch-1 TPOT (128 in / 512 out) per side. With
# TESTS="tests/..." those tests of this tree run first on the GPU (within TEST_TIMEOUT, 200 s). ROUNDS (2) counted
# rounds; RUN_TIMEOUT (120) seconds per run (a first start that tunes kernels takes longer); A_ARGS: flags for side
# A's runs; SKIP_B1=1: no batch-1 TPOT; SHARED_ROOT=1: both sides use one cache root, so both run the launches A's
# first run tuned (tunings that differ between two roots can move the workload by more than a change being
# compared).
# About 4 minutes. Usage: [TESTS=...] bash benchmarks/gpu_offline_ab.sh B_DIR [OUTDIR]
set -uo pipefail
source "$(dirname "$0")/ab_helpers.sh"  # ab_dirs, side_dir, side_root, b1_tpot
ab_dirs "$1" "${2:-offline-ab}"
print_versions
if [ -n "${TESTS:-}" ]; then
  # shellcheck disable=SC2086
  PYTHONPATH=$here timeout "${TEST_TIMEOUT:-200}" python3 -m pytest -q -p no:cacheprovider $TESTS 2>&1 | tail -n 2
fi

offline() {  # SIDE TAG: one `bench offline` run with SIDE's code (side A adds $A_ARGS)
  local dir extra=""; dir=$(side_dir "$1")
  if [ "$1" = A ]; then extra=${A_ARGS:-}; fi
  (cd "$dir" && TIERLM_CACHE_DIR=$(side_root offline "$1") PYTHONPATH=$dir timeout "${RUN_TIMEOUT:-120}" \
    python3 -m tierlm bench \
    offline --model builtin:qwen3-0.6b --load-format dummy --skip-tokenizer-init --json $extra > "$out/$2.json" \
    2> "$out/$2.err") || echo "$2 failed"
}
offline A cold-A; offline B cold-B
for round in $(seq 1 "${ROUNDS:-2}"); do offline A "r$round-A"; offline B "r$round-B"; done
for side in A B; do
  [ -n "${SKIP_B1:-}" ] && break
  b1_tpot "$(side_dir $side)" "$out/b1-$side" TIERLM_CACHE_DIR="$(side_root offline $side)"
done
python3 benchmarks/show_tuned.py "$here"/.cache-offline-* > "$out/tuned.txt"
python3 benchmarks/offline_summary.py "$out"/r*.json "$out"/b1-*.json
