#!/usr/bin/env bash
# Qwen3-0.6B's offline workload (`tierlm bench offline`, nano-vllm, dummy weights) on this tree with the KV cache
# in the model's dtype and in fp8, one GPU, one cache root: a first run per dtype fills it (listed as cold-*,
# it also tunes that dtype's kernels), then ROUNDS (2) rounds of both. RUN_TIMEOUT (200) seconds per run.
# About 4 minutes on a fresh machine. Usage: [ROUNDS=2] bash benchmarks/gpu_kv_dtypes.sh [OUTDIR]
set -uo pipefail
out=${1:-kv-dtypes}; mkdir -p "$out"; out=$(cd "$out" && pwd)
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TIERLM_CACHE_DIR=$PWD/.cache-kv-dtypes
offline() {  # DTYPE TAG
  timeout "${RUN_TIMEOUT:-200}" python3 -m tierlm bench offline --model builtin:qwen3-0.6b --load-format dummy \
    --skip-tokenizer-init --kv-cache-dtype "$1" --json > "$out/$2.json" 2> "$out/$2.err" || echo "$2 failed"
}
offline auto cold-auto; offline fp8 cold-fp8
for round in $(seq 1 "${ROUNDS:-2}"); do offline auto "r$round-auto"; offline fp8 "r$round-fp8"; done
python3 benchmarks/offline_summary.py "$out"/cold-*.json "$out"/r*.json
