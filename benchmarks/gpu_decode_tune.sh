#!/usr/bin/env bash
# The start-up decode tuner at the engine's shapes: the candidates' timings and the tuner's pick per round
# (decode_tune_shapes.py, bf16 and fp8 KV), then Qwen3-0.6B's offline workload (nano-vllm, dummy weights) on a fresh
# cache root (one cold run that tunes, then ROUNDS warm ones, default 2) and the launch it tuned; with PIN set
# (`KV_TILE:STAGES`, 4 warps) also that launch pinned on a copy of the root, the same rounds, alternating.
# About 5 minutes. Usage: [PIN=64:3] [ROUNDS=2] bash benchmarks/gpu_decode_tune.sh [OUTDIR]
set -uo pipefail
source "$(dirname "$0")/ab_helpers.sh"  # ab_dirs
ab_dirs . "${1:-decode-tune}"
export PYTHONPATH=$here
python3 benchmarks/decode_tune_shapes.py > "$out/shapes-bf16.txt" 2>&1 || echo "shapes bf16 failed"
python3 benchmarks/decode_tune_shapes.py --kv-dtype fp8 --rounds 1 > "$out/shapes-fp8.txt" 2>&1 \
  || echo "shapes fp8 failed"
root=$here/.cache-decode-tune
run() {  # ROOT TAG [TIMEOUT]
  TIERLM_CACHE_DIR=$1 timeout "${3:-100}" python3 -m tierlm bench offline --model builtin:qwen3-0.6b \
    --load-format dummy --skip-tokenizer-init --json > "$out/$2.json" 2> "$out/$2.err" || echo "$2 failed"
}
rm -rf "$root"*
run "$root" cold 180
[ -n "${PIN:-}" ] && python3 benchmarks/pin_decode_launch.py "$root" "$PIN"  # copy $root-TILE-STAGES
for round in $(seq 1 "${ROUNDS:-2}"); do
  run "$root" "r$round-tuned"
  [ -n "${PIN:-}" ] && run "$root-${PIN/:/-}" "r$round-pinned"
done
tail -n 14 "$out/shapes-bf16.txt"; tail -n 12 "$out/shapes-fp8.txt"
python3 benchmarks/decode_tunings.py "$root"
python3 benchmarks/offline_summary.py "$out"/*.json
