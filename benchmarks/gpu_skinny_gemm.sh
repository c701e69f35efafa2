#!/usr/bin/env bash
# The decode linears' kernels on one GPU: their GPU tests, then the skinny GEMM's tuning table for the
# named models' shapes (5-256 rows, each bare and with its prologue, `bench_skinny_gemm.py`), Qwen3-0.6B's
# decode steps at 8-128 requests with the kernel and with cuBLAS (`profile_engine.py`, one process each), and
# the GEMV tuner's picks for Llama-3.1-8B (1-4 rows, `bench_gemv.py --tuner`). About 6 minutes.
# Usage: [MODELS=qwen3-0.6b] [SKIP_8B=1] bash benchmarks/gpu_skinny_gemm.sh [OUTDIR]
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-skinny}
mkdir -p "$out"
export PYTHONPATH=$here
source "$(dirname "$0")/ab_helpers.sh"  # print_versions
print_versions
timeout 240 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_skinny_gemm.py tests/kernels/test_gemv.py \
  tests/parallel/test_linear.py tests/kernels/test_pdl.py > "$out/tests.txt" 2>&1
grep -E "^(E  |FAILED|[0-9]+ (passed|failed))" "$out/tests.txt" | head -n 30
timeout 300 python3 benchmarks/bench_skinny_gemm.py --models "${MODELS:-qwen3-0.6b}" 2>&1 | grep -v -i warn \
  | tee "$out/skinny.txt"
for flag in --small-batch-gemm --no-small-batch-gemm; do
  TIERLM_CACHE_DIR=${TIERLM_CACHE_DIR:-$here/.cache-skinny} timeout 200 python3 benchmarks/profile_engine.py \
    --batches 8,16,32,64,128 --prefill-len 0 "$flag" > "$out/steps$flag.txt" 2>&1 || echo "steps $flag failed"
  echo "== decode steps $flag"; grep -A6 "^ batch" "$out/steps$flag.txt"
done
if [ -z "${SKIP_8B:-}" ]; then
  timeout 200 python3 benchmarks/bench_gemv.py --tuner --models llama-3.1-8b 2>&1 | grep -v -i warn \
    | tee "$out/gemv-8b.txt"
fi
