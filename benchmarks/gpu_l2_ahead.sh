#!/usr/bin/env bash
# The L2 read-ahead of the O projection's weight (tierlm/kernels/l2_ahead.py) on one GPU (sm_90+): its GPU
# tests; the Llama-3.1-8B layer chain at batch 1 with it at several points and without (bench_l2_ahead.py);
# then engine decode steps of the 8B at batch 1 and 4 with TIERLM_L2_AHEAD=1 and =0 alternated, ROUNDS times
# (profile_engine.py, one cache root, so the GEMV plans are tuned once, by the first run).
# Usage: bash benchmarks/gpu_l2_ahead.sh [OUTDIR]   (SKIP_CHAIN=1 / SKIP_ENGINE=1 skip a part)
set -uo pipefail
out=${1:-l2-ahead}
mkdir -p "$out"
export PYTHONPATH=$PWD TIERLM_CACHE_DIR=$PWD/.cache-l2
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_l2_ahead.py 2>&1 | tail -n 2
if [ -z "${SKIP_CHAIN:-}" ]; then
  timeout 180 python3 benchmarks/bench_l2_ahead.py > "$out/chain.txt" 2>&1 || echo "bench_l2_ahead failed ($?)"
  grep -v "^INFO" "$out/chain.txt" | tail -n 17
fi
[ -n "${SKIP_ENGINE:-}" ] && exit 0
for round in $(seq "${ROUNDS:-2}"); do
  for on in 1 0; do
    TIERLM_L2_AHEAD=$on timeout 200 python3 benchmarks/profile_engine.py --model builtin:llama-3.1-8b \
      --batches 1,4 --prefill-len 0 --steps 100 > "$out/llama-r$round-l2ahead$on.txt" 2>&1 \
      || echo "llama round $round L2_AHEAD=$on failed ($?)"
    echo "round $round TIERLM_L2_AHEAD=$on"; grep -h -A2 "^ batch" "$out/llama-r$round-l2ahead$on.txt" | tail -n 2
  done
done
