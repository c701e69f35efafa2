#!/usr/bin/env bash
# Why `--kv-cache-dtype fp8` loses to auto on many short requests (Qwen3-0.6B, dummy weights, one GPU, one
# cache root): the workload of 1,024 requests of 16-128 tokens (16-256 out) pass by pass with a kernel
# profile, per dtype (offline_steps.py, which warms the engine on another seed first), then `bench offline`
# on it in ROUNDS (2) rounds of fp8 then auto. About 5 minutes. Usage: bash benchmarks/gpu_fp8_short.sh [OUTDIR]
set -uo pipefail
out=${1:-fp8-short}
mkdir -p "$out"; out=$(cd "$out" && pwd)
export PYTHONUNBUFFERED=1 TIERLM_CACHE_DIR=$PWD/.cache-fp8-short
work=(--num-requests 1024 --input-len 16 128 --output-len 16 256)
for dtype in fp8 auto; do
  timeout 200 python3 benchmarks/offline_steps.py "${work[@]}" --kv-cache-dtype $dtype --torch-profile "${ROWS:-30}" \
    > "$out/steps-$dtype.txt" 2>&1 || echo "offline_steps $dtype failed ($?)"
  echo "== $dtype"; grep -A12 "^passes" "$out/steps-$dtype.txt" | head -n 12
done
for round in $(seq 1 "${ROUNDS:-2}"); do
  for dtype in fp8 auto; do
    timeout 120 python3 -m tierlm bench offline --model builtin:qwen3-0.6b --load-format dummy --skip-tokenizer-init \
      --kv-cache-dtype $dtype --json "${work[@]}" > "$out/short-$dtype-r$round.json" 2>> "$out/runs.log" \
      || echo "bench offline $dtype round $round failed"
  done
done
python3 benchmarks/offline_summary.py "$out"/short-*.json
