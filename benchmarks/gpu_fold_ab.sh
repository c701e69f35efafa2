#!/usr/bin/env bash
# Decode attention's split merge inside stage 1 (A: `decode_fold`, the default) against a second launch (B:
# decode_fold=False), on one GPU and one cache root: the kernel's GPU tests, then `bench_attention.py
# --fold-sweep` at small-batch shapes (SHAPES), then decode steps (`profile_engine.py`) of Qwen3-0.6B at batches
# 1, 4, 16 and 64 and of Llama-3.1-8B at batch 1 (SKIP_8B=1: not; or RUNS, `;`-separated "MODEL BATCHES STEPS
# CONTEXT"), in the order A B A B after a first run per model that fills the root. PARTS (default "tests kernel
# engine") picks the steps. About 6 minutes.
# Usage: [PARTS=...] [SHAPES=...] [RUNS=...] bash benchmarks/gpu_fold_ab.sh [OUTDIR]
set -uo pipefail
source "$(dirname "$0")/ab_helpers.sh"  # gpu_start, stamp
gpu_start "${1:-fold-ab}"  # sets out, here; PYTHONPATH
export TIERLM_CACHE_DIR=${TIERLM_CACHE_DIR:-$here/.cache-fold}
parts=${PARTS:-tests kernel engine}
if [[ $parts == *tests* ]]; then
  stamp tests
  timeout "${TEST_TIMEOUT:-300}" python3 -m pytest -q -p no:cacheprovider tests/kernels/test_kernels.py \
    tests/kernels/test_rope_in_stage1.py tests/attention/test_triton_backend.py 2>&1 | tail -n 3
fi
if [[ $parts == *kernel* ]]; then
  stamp kernel
  timeout 240 python3 benchmarks/bench_attention.py --fold-sweep \
    --decode-shapes "${SHAPES:-1:512,1:2048,1:8192,4:1024,16:1024,32:256-2048,64:1024}" > "$out/sweep.txt" 2>&1 \
    || { echo "sweep failed"; tail -n 5 "$out/sweep.txt"; }
  grep "^fold \|^device" "$out/sweep.txt"
fi
steps() {  # TAG FOLD MODEL BATCHES STEPS CONTEXT: decode steps with decode_fold=FOLD
  timeout 200 python3 benchmarks/with_attention_config.py "decode_fold=$2" benchmarks/profile_engine.py \
    --model "$3" --batches "$4" --prefill-len 0 --steps "$5" --context "$6" > "$out/$1.txt" 2> "$out/$1.err" \
    || { echo "$1 failed"; tail -n 5 "$out/$1.err"; }
}
if [[ $parts == *engine* ]]; then
  runs="builtin:qwen3-0.6b 1,4,16,64 300 512"
  [ -z "${SKIP_8B:-}" ] && runs+=";builtin:llama-3.1-8b 1 100 512"
  IFS=';' read -ra models <<< "${RUNS:-$runs}"
  for i in "${!models[@]}"; do
    read -r model batches n context <<< "${models[$i]}"
    stamp "engine $model, batches $batches, context $context"
    steps "m$i-first" True "$model" "$batches" 20 "$context"
    for round in 1 2; do
      steps "m$i-r$round-A" True "$model" "$batches" "$n" "$context"
      steps "m$i-r$round-B" False "$model" "$batches" "$n" "$context"
    done
    for f in "$out"/m"$i"-r*.txt; do echo "-- $(basename "$f" .txt)"; grep -E "^ *[0-9]" "$f"; done
  done
fi
