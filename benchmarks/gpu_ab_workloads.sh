#!/usr/bin/env bash
# `tierlm bench offline` workloads other than the nano-vllm default, this tree (A) against another checkout (B, e.g.
# `git archive COMMIT | tar -x -C DIR`) on one GPU, builtin:$MODEL (default qwen3-0.6b) with dummy weights, each side
# with a cache root of its own (SHARED_ROOT=1: one root for both; ROOT_NAME names it, default `workloads`, so
# `offline` reuses the roots of gpu_offline_ab.sh), in the order B A per workload: WORKLOADS is a `;`-separated list
# of `bench offline` argument strings (default: the nano-vllm workload over an fp8 KV cache, and 64 long prompts with
# short answers). ROUNDS (1): the B A pair repeats per workload (rounds after the first into w<i>-r<round>-<side>;
# a first run on a fresh root also tunes kernels).
# Usage: [WORKLOADS="ARGS;ARGS"] bash benchmarks/gpu_ab_workloads.sh B_DIR [OUTDIR]
set -uo pipefail
source "$(dirname "$0")/ab_helpers.sh"  # ab_dirs, side_dir, side_root
ab_dirs "$1" "${2:-ab-workloads}"
IFS=';' read -r -a loads \
  <<< "${WORKLOADS:---kv-cache-dtype fp8;--num-requests 64 --input-len 3000 4000 --output-len 200 300}"
i=0
for args in "${loads[@]}"; do
  i=$((i + 1))
  for round in $(seq 1 "${ROUNDS:-1}"); do
    tag=w$i; [ "$round" = 1 ] || tag=w$i-r$round
    for side in B A; do
      dir=$(side_dir "$side")
      # shellcheck disable=SC2086
      (cd "$dir" && TIERLM_CACHE_DIR=$(side_root "${ROOT_NAME:-workloads}" "$side") PYTHONPATH=$dir \
        timeout "${RUN_TIMEOUT:-120}" python3 -m tierlm bench offline --model "builtin:${MODEL:-qwen3-0.6b}" \
        --load-format dummy --skip-tokenizer-init --json $args > "$out/$tag-$side.json" 2> "$out/$tag-$side.err") \
        || echo "$tag $side failed"
    done
  done
  echo "w$i: $args"
done
python3 benchmarks/offline_summary.py "$out"/w*.json
