#!/usr/bin/env bash
# Where decode steps between the largest and the smallest batches spend their time, Qwen3-0.6B with dummy
# weights on one GPU: the nano-vllm workload pass by pass (offline_steps.py), decode steps at 16-256 requests of
# ~1,100 tokens of context with the kernels of the batch-96 and batch-16 steps (profile_engine.py
# --torch-profile), and decode attention alone at those shapes (bench_attention.py, the default launch and the
# split sweep). One cache root for all. About 5 minutes. Usage: bash benchmarks/gpu_mid_batch_profile.sh [OUTDIR]
set -uo pipefail
out=${1:-mid-batch-profile}
rows=${ROWS:-30}
mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TIERLM_CACHE_DIR=${TIERLM_CACHE_DIR:-$PWD/.cache-mid}
source "$(dirname "$0")/ab_helpers.sh"  # print_versions
print_versions
timeout 200 python3 benchmarks/offline_steps.py > "$out/offline.txt" 2>&1 || echo "offline failed (exit $?)"
for b in 96 16; do
  timeout 150 python3 benchmarks/profile_engine.py --batches 16,48,96,160,256 --context 1100 --steps 40 \
    --prefill-len 0 --torch-profile --profile-batch $b --profile-rows "$rows" > "$out/steps-b$b.txt" 2>&1 \
    || echo "steps b$b failed (exit $?)"
done
timeout 120 python3 benchmarks/bench_attention.py --decode-shapes 16:1500,48:1300,96:1100,256:800 --default-only \
  > "$out/attn.txt" 2>&1 || echo "attn failed (exit $?)"
timeout 120 python3 benchmarks/bench_attention.py --decode-shapes 16:1500,48:1300 --split-sweep \
  > "$out/attn-split.txt" 2>&1 || echo "attn split failed (exit $?)"
echo "== offline"; grep -v "^INFO" "$out/offline.txt" | grep -A14 "^passes"
for b in 96 16; do \
  echo "== steps b$b"; grep -v "^INFO" "$out/steps-b$b.txt" | tail -n "$((rows + 40))" | cut -c1-150; done
echo "== attention"; tail -20 "$out/attn.txt"; tail -30 "$out/attn-split.txt"
