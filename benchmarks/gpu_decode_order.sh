#!/usr/bin/env bash
# Decode attention's stage-1 program order (#20) on one GPU: this tree (A, programs numbered KV head first) against
# another checkout (B, e.g. `git archive COMMIT | tar -x -C DIR`, batch first). The decode kernel cases and the
# Triton backend's decode tests of this tree, then `bench_attention.py --order-sweep` (both orders, KV tile 64/128,
# 4/8 warps, graph-replayed) at SHAPES, then Qwen3-0.6B's offline workload A B A B (gpu_offline_ab.sh, no
# batch-1 TPOT: one request has one program per head whatever the order). About 7 minutes.
# Usage: [SHAPES=16:1500,...] bash benchmarks/gpu_decode_order.sh B_DIR [OUTDIR]
set -uo pipefail
source "$(dirname "$0")/ab_helpers.sh"  # ab_dirs
ab_dirs "$1" "${2:-decode-order}"
PYTHONPATH=$here timeout 150 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_kernels.py \
  tests/attention/test_triton_backend.py -k decode 2>&1 | tail -n 2
PYTHONPATH=$here timeout 150 python3 benchmarks/bench_attention.py --order-sweep \
  --decode-shapes "${SHAPES:-16:1500,48:1300,96:1100,256:800,128:100-2000}" > "$out/order.txt" 2>&1 \
  || echo "order sweep failed (exit $?)"
grep "^order\|copy\|^device" "$out/order.txt"
SKIP_B1=1 RUN_TIMEOUT=${RUN_TIMEOUT:-100} bash benchmarks/gpu_offline_ab.sh "$base" "$out/offline"
