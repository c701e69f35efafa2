#!/usr/bin/env bash
# Qwen3-0.6B's offline workload (nano-vllm, dummy weights) under decode launches pinned by hand, with the q/k norm
# and rotary inside decode attention (`decode_fused_rope`) on for every decode step (1) and off (0): does a setting
# gain with one launch and lose with another, and which launch does the engine run fastest? One cold run tunes a
# cache root (fusion off; cut at 150 s), then a copy of it per launch in LAUNCHES (`KV_TILE:STAGES`, 4 warps;
# default the two the start-up tuner picked on different machines, within 0.5% in its own timing) runs each of
# SETTINGS (default "1 0"), ROUNDS (1) times.
# About 4 minutes with the defaults. Usage: [LAUNCHES="64:2 64:3 128:2 128:3"] [SETTINGS=0] [ROUNDS=2]
#   bash benchmarks/gpu_fused_rope_launch.sh [OUTDIR]
set -uo pipefail
source "$(dirname "$0")/ab_helpers.sh"  # ab_dirs
ab_dirs . "${1:-fused-rope-launch}"
export PYTHONPATH=$here
root=$here/.cache-fused-rope-launch
run() {  # ROOT SETTING TAG [TIMEOUT]
  TIERLM_CACHE_DIR=$1 timeout "${4:-${RUN_TIMEOUT:-100}}" python3 benchmarks/with_attention_config.py \
    "decode_fused_rope=$2" -m tierlm bench offline --model builtin:qwen3-0.6b --load-format dummy \
    --skip-tokenizer-init --json > "$out/$3.json" 2> "$out/$3.err" || echo "$3 failed"
}
rm -rf "$root"*
run "$root" 0 cold 150
launches=${LAUNCHES:-128:2 64:3}
# shellcheck disable=SC2086  # one argument per launch
python3 benchmarks/pin_decode_launch.py "$root" $launches  # copies $root-TILE-STAGES
for round in $(seq 1 "${ROUNDS:-1}"); do
  for launch in $launches; do
    for setting in ${SETTINGS:-1 0}; do
      run "$root-${launch/:/-}" "$setting" "r$round-tile${launch/:/-}-rope$setting"
    done
  done
done
python3 benchmarks/show_tuned.py "$root"* > "$out/tuned.txt"
python3 benchmarks/offline_summary.py "$out"/*.json
