#!/usr/bin/env bash
# How mixed steps should be sized, measured on the engine alone (no HTTP): Poisson arrivals replayed into one
# engine under several `MixedBudget` variants (benchmarks/replay_arrivals.py), then what a mixed pass of D
# decodes and one prompt chunk costs against a pure prefill of the same tokens (benchmarks/profile_engine.py).
# Run from the repository root: bash benchmarks/gpu_mixed_policy.sh [OUTDIR]
# Environment: MODEL [builtin:llama-3.1-8b], RATE [18.85] req/s, DURATION [14] s of arrivals, VARIANTS (see
# replay_arrivals.py), BATCH [96] decodes beside each profiled chunk, SMALL [builtin:qwen3-0.6b], SMALL_RATE
# [59.43] (the small model replayed too, off and on, at that rate; empty SMALL skips it), PROFILE [1] (0 skips
# the pass costs), TRACE [0] (1: every pass and request in replay.json, see replay_arrivals.py --trace).
set -uo pipefail
out=${1:-mixed-policy-out}
mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
export TIERLM_CACHE_DIR=${TIERLM_CACHE_DIR:-$PWD/.cache-bench}
MODEL=${MODEL:-builtin:llama-3.1-8b}; RATE=${RATE:-18.85}; DURATION=${DURATION:-14}; BATCH=${BATCH:-96}
VARIANTS=${VARIANTS:-"off=0/0/0;on=2048/4/4096;k1=2048/1/0;k0=2048/0/0;b4k0=4096/0/0;b8k0=8192/0/0"}
SMALL=${SMALL-builtin:qwen3-0.6b}; SMALL_RATE=${SMALL_RATE:-59.43}
common=(--load-format dummy --skip-tokenizer-init)
echo "== replay: $MODEL at $RATE req/s"
timeout 330 python3 benchmarks/replay_arrivals.py --model "$MODEL" "${common[@]}" --rate "$RATE" \
  --duration "$DURATION" --variants "$VARIANTS" --json "$out/replay.json" $([ "${TRACE:-0}" = 1 ] && echo --trace) \
  > "$out/replay.txt" 2>&1 \
  || echo "replay failed (exit $?)"
tail -n 22 "$out/replay.txt"
if [ "${PROFILE:-1}" != 0 ]; then
echo "== mixed pass against prefill: $MODEL, $BATCH decodes"
timeout 200 python3 benchmarks/profile_engine.py --model "$MODEL" "${common[@]}" --batches "$BATCH" --context 1024 \
  --steps 30 --prefill-len 1024,2048,4096,8192 --enable-mixed-chunk --max-mixed-tokens 8192 \
  --mixed-chunks 256,1024,2048,4096,7936 > "$out/profile.txt" 2>&1 || echo "profile failed (exit $?)"
tail -n 16 "$out/profile.txt"
fi
if [ -n "$SMALL" ]; then
  echo "== replay: $SMALL at $SMALL_RATE req/s"
  timeout 150 python3 benchmarks/replay_arrivals.py --model "$SMALL" "${common[@]}" --rate "$SMALL_RATE" \
    --duration "$DURATION" --variants "off=0/0/0;on=2048/4/4096" --json "$out/replay-small.json" \
    > "$out/replay-small.txt" 2>&1 || echo "small replay failed (exit $?)"
  tail -n 6 "$out/replay-small.txt"
fi
