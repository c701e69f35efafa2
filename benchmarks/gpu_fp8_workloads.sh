#!/usr/bin/env bash
# `--kv-cache-dtype fp8` against auto on workloads other than the nano-vllm one, Qwen3-0.6B (dummy weights), one
# GPU, one cache root (a first fp8 run fills it and is not counted): long prompts and short outputs (128
# requests of 2,048-4,096 tokens, 32-256 out: prefill-bound, so the extend path), many short requests (1,024 of
# 16-128 tokens, 16-256 out), batch 1 (128 in / 512 out) and decode steps at 64 requests of 8,192 tokens.
# ROUNDS (1) rounds of the workloads, each round fp8 then auto. About 6 minutes a round.
# Usage: [ROUNDS=N] bash benchmarks/gpu_fp8_workloads.sh [OUTDIR]
set -uo pipefail
out=${1:-fp8-workloads}
mkdir -p "$out"; out=$(cd "$out" && pwd)
export PYTHONUNBUFFERED=1 TIERLM_CACHE_DIR=$PWD/.cache-fp8-workloads
source "$(dirname "$0")/ab_helpers.sh"  # print_versions
print_versions
run() {  # DTYPE TAG ARGS...: one `bench offline` run; stderr appended to OUT/runs.log
  local dtype=$1 tag=$2; shift 2
  echo "== $tag" >> "$out/runs.log"
  timeout "${RUN_TIMEOUT:-200}" python3 -m tierlm bench offline --model builtin:qwen3-0.6b --load-format dummy \
    --skip-tokenizer-init --kv-cache-dtype "$dtype" --json "$@" > "$out/$tag.json" 2>> "$out/runs.log" \
    || echo "$tag failed"
  case $tag in cold-*) rm -f "$out/$tag.json" ;; esac  # not counted (and $OUT keeps few files)
}
run fp8 cold-fp8 --num-requests 64; run auto cold-auto --num-requests 64
for round in $(seq 1 "${ROUNDS:-1}"); do
  for dtype in fp8 auto; do
    run $dtype "long-prompts-$dtype-r$round" --num-requests 128 --input-len 2048 4096 --output-len 32 256
    run $dtype "short-many-$dtype-r$round" --num-requests 1024 --input-len 16 128 --output-len 16 256
    run $dtype "b1-$dtype-r$round" --num-requests 1 --input-len 128 128 --output-len 512 512
  done
done
python3 benchmarks/offline_summary.py "$out"/long-*.json "$out"/short-*.json "$out"/b1-*.json
for dtype in fp8 auto; do
  echo "== decode steps, --kv-cache-dtype $dtype, context 8,192"
  timeout 150 python3 benchmarks/profile_engine.py --batches 16,64 --context 8192 --prefill-len 0 \
    --kv-cache-dtype $dtype 2>&1 | grep -A3 "^ batch"
done
