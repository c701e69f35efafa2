#!/usr/bin/env bash
# L2 prefetches before the PDL wait (`TIERLM_L2_PREFETCH`: 0, attention, 1 = attention and the skinny GEMM's first
# weight tile; the first run also had a mode that prefetched the GEMM's whole K slice, since removed) on Qwen3-0.6B's
# offline workload (nano-vllm, dummy weights): this tree (A) in each mode against another checkout (B, e.g.
# `git archive COMMIT | tar -x -C DIR`), interleaved, ROUNDS (2)
# rounds after one uncounted run per side that fills its cache root (A's tuned with the default mode); with
# SHARED_ROOT=1 both sides use one root, so they run the same tuned launches (A's first run tunes them). The
# prefetch tests run first on the GPU. MODES overrides the list. About 7 minutes.
# Usage: bash benchmarks/gpu_prefetch_ab.sh B_DIR [OUTDIR]
set -uo pipefail
source "$(dirname "$0")/ab_helpers.sh"  # ab_dirs, side_dir, side_root
ab_dirs "$1" "${2:-prefetch-ab}"
print_versions
PYTHONPATH=$here timeout 200 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_l2_prefetch.py \
  tests/kernels/test_pdl.py 2>&1 | tail -n 2

offline() {  # SIDE MODE TAG: one `bench offline` run with SIDE's code and TIERLM_L2_PREFETCH=MODE
  local dir; dir=$(side_dir "$1")
  (cd "$dir" && TIERLM_L2_PREFETCH=$2 TIERLM_CACHE_DIR=$(side_root prefetch "$1") PYTHONPATH=$dir \
    timeout "${RUN_TIMEOUT:-150}" python3 -m tierlm bench offline --model builtin:qwen3-0.6b --load-format dummy \
    --skip-tokenizer-init --json > "$out/$3.json" 2> "$out/$3.err") || echo "$3 failed"
}
offline A 1 cold-A; offline B 0 cold-B
for round in $(seq 1 "${ROUNDS:-2}"); do
  for mode in ${MODES:-1 0 attention}; do offline A "$mode" "r$round-A-$mode"; done
  offline B 0 "r$round-B"
done
python3 benchmarks/show_tuned.py "$here"/.cache-prefetch-* > "$out/tuned.txt"
python3 benchmarks/offline_summary.py "$out"/cold-*.json "$out"/r*.json
