#!/usr/bin/env bash
# The tier copy kernels on one GPU, in one go (about 6 minutes on an H200):
# 1. the GPU tests of the page movers (the Triton copy kernel, the staged DMA copier, pages reused mid-copy
#    with each backend), 2. bandwidth of the JIT and Triton kernels against a pinned memcpy
#    (bench_kv_transfer.py), 3. what a backup beside a prefill costs the prefill, per staging size, gather
#    grid and stream priority (bench_backup_interference.py), 4. the multi-turn workload at
#    --hicache-ratio 5 with the copies forced onto the Triton kernel (gpu_multiturn_tiers.sh, EXTRA).
# Usage: bash benchmarks/gpu_tier_kernels.sh [OUTDIR]   (needs pytest; SKIP_MULTITURN=1 skips step 4)
set -uo pipefail
out=${1:-tier-kernels}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
python3 -m pytest -q -p no:cacheprovider tests/kernels/test_kv_pages.py tests/kvcache/test_dma.py \
  tests/kvcache/test_reuse_while_copying.py tests/kvcache/test_transfer.py >"$out/tests.txt" 2>&1
echo "GPU tests: $(tail -n 1 "$out/tests.txt")"
timeout 240 python3 benchmarks/bench_kv_transfer.py --page-sizes 16 --batches 256 1024 --no-torch \
  >"$out/kv_transfer.txt" 2>&1 || echo "bench_kv_transfer failed: $(tail -n 3 "$out/kv_transfer.txt")"
tail -n 6 "$out/kv_transfer.txt"
timeout 240 python3 benchmarks/bench_backup_interference.py --pages 512 --reps 7 >"$out/interference.txt" 2>&1 \
  || echo "bench_backup_interference failed: $(tail -n 3 "$out/interference.txt")"
tail -n 11 "$out/interference.txt"
if [ "${SKIP_MULTITURN:-0}" != 1 ]; then
  RUNS=r5 STORE_IO=0 EXTRA="--hicache-io-backend triton" bash benchmarks/gpu_multiturn_tiers.sh "$out/multiturn" \
    >"$out/multiturn.txt" 2>&1
  echo; echo "multi-turn, copies by the Triton kernel:"; tail -n 16 "$out/multiturn.txt"
fi
