#!/usr/bin/env bash
# `--kv-cache-dtype fp8` on one GPU: decode attention alone at two shapes over a bf16 pool (the default launch)
# and an fp8 one (every launch variant of the sweep, graph-replayed);
# the GPU tests (the kernels over an fp8 pool against torch, bit for bit where they store; the Triton backends,
# per-head and latent, against the torch ones; engine greedy parity and prefix hits);
# then Qwen3-0.6B with the KV cache in the
# model's dtype ("auto") and in fp8, one cache root for both: the offline workload (nano-vllm's; a first run
# per dtype fills the cache root and is not counted, then ROUNDS (1) rounds in the order auto fp8), decode
# steps at 64 and 256 requests of about 512 tokens and 16 and 64 of 8,192, and the decode tunings chosen.
# About 7 minutes. Usage: bash benchmarks/gpu_fp8_kv.sh [OUTDIR]
set -uo pipefail
out=${1:-fp8-kv}
mkdir -p "$out"; out=$(cd "$out" && pwd)
export PYTHONUNBUFFERED=1 TIERLM_CACHE_DIR=$PWD/.cache-fp8-kv
source "$(dirname "$0")/ab_helpers.sh"  # print_versions
print_versions
for dtype in auto fp8; do
  echo "== decode attention alone, KV $dtype"
  if [ $dtype = auto ]; then only=--default-only; else only=; fi
  timeout 150 python3 benchmarks/bench_attention.py --decode-shapes 256:512,64:2048 --kv-dtype $dtype $only 2>&1 \
    | grep -v -i warn > "$out/sweep-$dtype.txt"
  tail -n 3 "$out/sweep-$dtype.txt"
done
timeout 240 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_kernels.py \
  tests/attention/test_triton_backend.py \
  tests/attention/test_mla_triton.py \
  -k fp8 2>&1 | tail -n 4
offline() {  # DTYPE TAG
  timeout "${RUN_TIMEOUT:-150}" python3 -m tierlm bench offline --model builtin:qwen3-0.6b --load-format dummy \
    --skip-tokenizer-init --kv-cache-dtype "$1" --json > "$out/$2.json" 2> /dev/null || echo "$2 failed"
}
offline auto cold-auto; offline fp8 cold-fp8
for round in $(seq 1 "${ROUNDS:-1}"); do offline auto "r$round-auto"; offline fp8 "r$round-fp8"; done
python3 benchmarks/offline_summary.py "$out"/cold-*.json "$out"/r*.json
for dtype in auto fp8; do
  echo "== decode steps, --kv-cache-dtype $dtype (context 512, then 8,192)"
  timeout 150 python3 benchmarks/profile_engine.py --batches 64,256 --prefill-len 0 --kv-cache-dtype $dtype 2>&1 \
    | grep -A3 "^ batch"
  timeout 150 python3 benchmarks/profile_engine.py --batches 16,64 --context 8192 --prefill-len 0 \
    --kv-cache-dtype $dtype 2>&1 | grep -A3 "^ batch"
done
python3 benchmarks/decode_tunings.py "$TIERLM_CACHE_DIR"
