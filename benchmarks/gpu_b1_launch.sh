#!/usr/bin/env bash
# #20's batch-1 TPOT of Qwen3-0.6B (128 in / 512 out, dummy weights) under decode launches pinned by hand: one cold
# run tunes a cache root, then a copy of it per launch in LAUNCHES (`KV_TILE:STAGES`, 4 warps, every batch size;
# default 128:2 64:3), ROUNDS (3) rounds alternating. Does the engine's batch-1 step follow the kernel timed alone
# (decode_tune_shapes.py)? About 3 minutes. Usage: [LAUNCHES=...] [ROUNDS=3] bash benchmarks/gpu_b1_launch.sh [OUTDIR]
set -uo pipefail
source "$(dirname "$0")/ab_helpers.sh"  # ab_dirs, b1_tpot, print_b1
ab_dirs . "${1:-b1-launch}"
root=$here/.cache-b1-launch
rm -rf "$root"*
B1_TIMEOUT=200 b1_tpot "$here" "$out/cold" TIERLM_CACHE_DIR="$root"
launches=${LAUNCHES:-128:2 64:3}
# shellcheck disable=SC2086  # one argument per launch
python3 benchmarks/pin_decode_launch.py "$root" $launches  # copies $root-TILE-STAGES
for round in $(seq 1 "${ROUNDS:-3}"); do
  for launch in $launches; do
    b1_tpot "$here" "$out/r$round-tile${launch/:/-}" TIERLM_CACHE_DIR="$root-${launch/:/-}"
  done
done
python3 benchmarks/decode_tunings.py "$root"
for f in "$out"/*.json; do echo "$(basename "$f" .json): $(print_b1 "$f")"; done
