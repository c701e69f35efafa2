#!/usr/bin/env bash
# Programmatic dependent launch on one GPU: the kernel tests it touches, the decode-layer GEMV chain with and
# without it (bench_gemv_chain.py, bit-identity checked), decode steps with TIERLM_PDL=1 and 0 alternated twice
# (profile_engine.py), and the engine's token-for-token checks (gpu_engine_check.py, PDL on vs off included).
# About 6 minutes. Usage: bash benchmarks/gpu_pdl.sh [OUTDIR]
set -uo pipefail
out=${1:-pdl}
mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TIERLM_CACHE_DIR=${TIERLM_CACHE_DIR:-$PWD/.cache-pdl}
timeout 240 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_kernels.py tests/kernels/test_gemv.py \
  tests/layers/test_block.py tests/attention/test_triton_backend.py 2>&1 | tail -n 3
timeout 120 python3 benchmarks/bench_gemv_chain.py --rows 1,4 > "$out/chain.txt" 2>&1 || echo "chain failed"
for pdl in 1 0 1 0; do
  TIERLM_PDL=$pdl timeout 200 python3 benchmarks/profile_engine.py --batches 1,4,64 --prefill-len 0 \
    > "$out/profile-pdl$pdl.txt" 2>&1 || echo "profile pdl=$pdl failed"
  echo "== TIERLM_PDL=$pdl"; grep -A4 "^ batch" "$out/profile-pdl$pdl.txt"
done
timeout 300 python3 benchmarks/gpu_engine_check.py --prompts 16 --max-tokens 64 --archs "${ARCHS:-llama,qwen3}" \
  > "$out/engine-check.txt" 2>&1; echo "gpu_engine_check exit $?"
grep -v "^INFO" "$out/engine-check.txt" | cut -c1-200 | tail -n 6
tail -n 9 "$out/chain.txt"
