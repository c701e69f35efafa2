#!/usr/bin/env bash
# The decode linears with their weight tiles brought in by the Tensor Memory Accelerator (`SkinnyConfig.tma`)
# against pointer loads, the small-batch GEMV and cuBLAS: the kernel's GPU tests and sm_90 build, how fast one
# kernel reads a buffer of each 8B linear's size with and without TMA (`read_floor.py --tma`), then
# `bench_skinny_sweep.py --tma` on Llama-3.1-8B's four shapes at 1 and 4 rows (the batch-1 step's linears) and,
# with QWEN=1, on Qwen3-0.6B's at 64-256 rows. About 7 minutes (8-9 more with QWEN=1).
# Usage (from the repository root): [QWEN=1] bash benchmarks/gpu_tma_linear.sh [OUTDIR]
set -uo pipefail
source "$(dirname "$0")/ab_helpers.sh"
gpu_start "${1:-tma}"
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_skinny_gemm.py \
  tests/kernels/test_sm90_compile.py \
  tests/bench/test_read_floor.py -k "skinny or read" > "$out/tests.txt" 2>&1
grep -E "^(E  |FAILED|[0-9]+ (passed|failed))" "$out/tests.txt" | head -n 30
timeout 180 python3 benchmarks/read_floor.py --sizes-mb 32,50,117,235 --tma 2>&1 | grep -v -i warn \
  | tee "$out/read-floor.txt"
timeout 330 python3 benchmarks/bench_skinny_sweep.py --model llama-3.1-8b --rows 1,4 --tma 2>&1 | grep -v -i warn \
  | tee "$out/sweep-8b.txt" | grep -v "not timed"
if [ -n "${QWEN:-}" ]; then
  timeout 540 python3 benchmarks/bench_skinny_sweep.py --model qwen3-0.6b --rows 64,128,256 --tma 2>&1 \
    | grep -v -i warn | tee "$out/sweep-0.6b.txt" | grep -v "not timed"
fi
