#!/usr/bin/env bash
# The decode linears' kernels on one GPU: their GPU tests, then the skinny GEMM's tuning table for the
# named models' shapes (5-256 rows, `bench_skinny_gemm.py`) and the GEMV tuner's picks for Llama-3.1-8B
# (1-4 rows, `bench_gemv.py --tuner`). About 4 minutes.
# Usage: [MODELS=qwen3-0.6b] [SKIP_8B=1] bash benchmarks/gpu_skinny_gemm.sh [OUTDIR]
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-skinny}
mkdir -p "$out"
export PYTHONPATH=$here
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
timeout 240 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_skinny_gemm.py tests/kernels/test_gemv.py \
  tests/parallel/test_linear.py tests/kernels/test_pdl.py > "$out/tests.txt" 2>&1
grep -E "^(E  |FAILED|[0-9]+ (passed|failed))" "$out/tests.txt" | head -n 30
timeout 300 python3 benchmarks/bench_skinny_gemm.py --models "${MODELS:-qwen3-0.6b}" 2>&1 | grep -v -i warn \
  | tee "$out/skinny.txt"
if [ -z "${SKIP_8B:-}" ]; then
  timeout 200 python3 benchmarks/bench_gemv.py --tuner --models llama-3.1-8b 2>&1 | grep -v -i warn \
    | tee "$out/gemv-8b.txt"
fi
