#!/usr/bin/env bash
# Small-batch decode, this tree (A) against another checkout (B, e.g. an earlier commit unpacked with
# `git archive COMMIT | tar -x -C DIR`) on one GPU: the engine's parity tests with the Triton backend and
# decode graphs and gpu_engine_check.py (Qwen3) for A; then per side Qwen3-0.6B decode steps at batch 1, 4
# and 64 and Llama-3.1-8B at batch 1 (profile_engine.py), and the #20 batch-1 TPOT (`bench offline`, one
# request, 128 in / 512 out). About 6 minutes. Usage: bash benchmarks/gpu_small_batch_ab.sh B_DIR [OUTDIR]
set -uo pipefail
source "$(dirname "$0")/ab_helpers.sh"  # b1_tpot, print_b1
base=$(cd "$1" && pwd); out=${2:-small-batch-ab}
mkdir -p "$out"
here=$PWD
export PYTHONUNBUFFERED=1 TIERLM_CACHE_DIR=${TIERLM_CACHE_DIR:-$here/.cache-ab}
PYTHONPATH=$here timeout 150 python3 -m pytest -q -p no:cacheprovider tests/attention/test_triton_backend.py 2>&1 \
  | tail -n 1
PYTHONPATH=$here timeout 200 python3 benchmarks/gpu_engine_check.py --prompts 8 --max-tokens 64 --archs qwen3 \
  > "$out/engine-check.txt" 2>&1; echo "gpu_engine_check exit $?"
grep -v "^INFO" "$out/engine-check.txt" | grep "identical" | cut -c1-120
side_dir() { if [ "$1" = B ]; then echo "$base"; else echo "$here"; fi; }
for side in A B; do
  dir=$(side_dir $side)
  (cd "$dir" && PYTHONPATH=$dir timeout 150 python3 benchmarks/profile_engine.py --batches 1,4,64 --prefill-len 0 \
    > "$out/qwen-$side.txt" 2>&1) || echo "qwen profile $side failed"
  (cd "$dir" && PYTHONPATH=$dir timeout 150 python3 benchmarks/profile_engine.py --model builtin:llama-3.1-8b \
    --batches 1 --prefill-len 0 > "$out/llama-$side.txt" 2>&1) || echo "llama profile $side failed"
  b1_tpot "$dir" "$out/b1-$side"
done
for side in A B; do
  echo "== $side"; grep -h -A4 "^ batch" "$out/qwen-$side.txt"; grep -h -A2 "^ batch" "$out/llama-$side.txt" | tail -n 1
  print_b1 "$out/b1-$side.json"
done
