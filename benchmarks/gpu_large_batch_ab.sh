#!/usr/bin/env bash
# Decode at small and large batch, this tree (A) against another checkout (B, e.g. an earlier commit unpacked
# with `git archive COMMIT | tar -x -C DIR`) on one GPU: first the kernel tests and the engine's token checks of
# A, then profile_engine.py at batch 1, 64 and 256 for both, then the offline benchmark (Qwen3-0.6B,
# nano-vllm workload) alternating A B A B after a discarded warm-up of each. A table last. About 7 minutes.
# Usage: bash benchmarks/gpu_large_batch_ab.sh B_DIR [OUTDIR]
set -uo pipefail
base=$(cd "$1" && pwd); out=${2:-large-batch-ab}
mkdir -p "$out"
here=$PWD
export PYTHONUNBUFFERED=1 TIERLM_CACHE_DIR=${TIERLM_CACHE_DIR:-$here/.cache-ab}
PYTHONPATH=$here timeout 200 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_kernels.py \
  tests/attention/test_triton_backend.py 2>&1 | tail -n 2
PYTHONPATH=$here timeout 240 python3 benchmarks/gpu_engine_check.py --prompts 16 --max-tokens 64 --archs llama,qwen3 \
  > "$out/engine-check.txt" 2>&1; echo "gpu_engine_check exit $?"
grep -v "^INFO" "$out/engine-check.txt" | grep "identical" | cut -c1-160
for side in A B; do
  dir=$here; [ "$side" = B ] && dir=$base
  (cd "$dir" && PYTHONPATH=$dir timeout 200 python3 benchmarks/profile_engine.py --batches 1,64,256 --context 512 \
    --prefill-len 0 > "$out/profile-$side.txt" 2>&1) || echo "profile $side failed"
done
offline() {  # SIDE TAG
  local dir=$here; [ "$1" = B ] && dir=$base
  (cd "$dir" && PYTHONPATH=$dir timeout 200 python3 -m tierlm bench offline --model builtin:qwen3-0.6b \
    --load-format dummy --skip-tokenizer-init --json > "$out/offline-$2.json" 2> "$out/offline-$2.err") \
    || echo "offline $2 failed"
}
offline A A-warm; offline B B-warm
for round in 1 2; do offline A "A$round"; offline B "B$round"; done
for side in A B; do echo "== $side"; grep -A4 "^ batch" "$out/profile-$side.txt"; done
python3 benchmarks/offline_summary.py "$out"/offline-{A-warm,B-warm,A1,B1,A2,B2}.json
