#!/usr/bin/env bash
# Decode steps and the offline workload with the decode linears tuned two or three ways, Qwen3-0.6B with dummy
# weights on one GPU: another checkout's default (B, e.g. `git archive COMMIT | tar -x -C DIR`), this tree's default
# (A), and with MARGIN set, this tree with the tuner's margin at MARGIN (1.3: a PDL-launched skinny GEMM is chosen
# where it takes at most 1.3x cuBLAS's time; benchmarks/with_margin.py). Per variant: profile_engine.py at BATCHES
# (32-256) requests of ~1,100 tokens, then offline_steps.py (nano-vllm workload, pass by pass). One cache root.
# About 2 minutes per variant after the first start's builds.
# Usage: [MARGIN=1.3] [BATCHES=32,64,96,128,192,256] bash benchmarks/gpu_margin_steps.sh B_DIR [OUT]
set -uo pipefail
source "$(dirname "$0")/ab_helpers.sh"  # ab_dirs, side_dir
ab_dirs "$1" "${2:-margin-steps}"
export TIERLM_CACHE_DIR=$here/.cache-margin
print_versions
run() {  # TAG SIDE MARGIN(- for the default)
  local tag=$1 dir; dir=$(side_dir "$2")
  local pre=(); [ "$3" != - ] && pre=(benchmarks/with_margin.py "$3")
  (cd "$dir" && PYTHONPATH=$dir timeout 200 python3 "${pre[@]}" benchmarks/profile_engine.py \
    --batches "${BATCHES:-32,64,96,128,192,256}" \
    --context 1100 --steps 40 --prefill-len 0 > "$out/steps-$tag.txt" 2>&1) || echo "steps $tag failed"
  (cd "$dir" && PYTHONPATH=$dir timeout 200 python3 "${pre[@]}" benchmarks/offline_steps.py \
    > "$out/offline-$tag.txt" 2>&1) \
    || echo "offline $tag failed"
}
run B B -
run A A -
tags=(B A)
[ -n "${MARGIN:-}" ] && { run A-margin A "$MARGIN"; tags+=(A-margin); }
for tag in "${tags[@]}"; do
  echo "== $tag"; grep -A7 "^ batch" "$out/steps-$tag.txt"; \
    grep "tok/s\|^decode\|^prefill\|^all" "$out/offline-$tag.txt" | head -12
  grep -h "autotune skinny_gemm" "$out/steps-$tag.txt" | sed 's/.*autotune skinny_gemm/skinny_gemm/' | cut -c1-200
done
