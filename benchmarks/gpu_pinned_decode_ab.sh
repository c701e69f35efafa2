#!/usr/bin/env bash
# This tree (A) against another checkout (B) on Qwen3-0.6B's offline workload (nano-vllm, dummy weights) with the
# decode attention launch held fixed: each side's first run tunes its own cache root (not counted), then the
# decode launch each chose (`autotune/triton_decode`) is given to the other side in a copy of its root, and ROUNDS
# (2) rounds run A and B with their own launch and with the other's. A start-up tuning that picks a different
# launch on two machines (or two runs) moves the workload by more than the changes being compared.
# About 7 minutes. Usage: bash benchmarks/gpu_pinned_decode_ab.sh B_DIR [OUTDIR]
set -uo pipefail
source "$(dirname "$0")/ab_helpers.sh"  # ab_dirs, side_dir
ab_dirs "$1" "${2:-pinned-ab}"
print_versions

offline() {  # SIDE ROOT TAG: one `bench offline` run with SIDE's code and cache root ROOT
  local dir; dir=$(side_dir "$1")
  (cd "$dir" && TIERLM_CACHE_DIR=$2 PYTHONPATH=$dir timeout "${RUN_TIMEOUT:-150}" python3 -m tierlm bench offline \
    --model builtin:qwen3-0.6b --load-format dummy --skip-tokenizer-init --json > "$out/$3.json" 2> "$out/$3.err") \
    || echo "$3 failed"
}
roots=$here/.cache-pinned
rm -rf "$roots"; mkdir -p "$roots"
offline A "$roots/A" cold-A; offline B "$roots/B" cold-B
for side in A B; do
  other=$([ $side = A ] && echo B || echo A)
  cp -r "$roots/$side" "$roots/$side-with-$other"
  rm -rf "$roots/$side-with-$other/autotune/triton_decode"
  cp -r "$roots/$other/autotune/triton_decode" "$roots/$side-with-$other/autotune/"
  echo "decode launch tuned by $side: $(cat "$roots/$side"/autotune/triton_decode/*.json | python3 -c \
    'import json,sys; r=json.load(sys.stdin)["results"]; print(r)')"
done
for round in $(seq 1 "${ROUNDS:-2}"); do
  offline A "$roots/A" "r$round-A-ownA"; offline B "$roots/B" "r$round-B-ownB"
  offline A "$roots/A-with-B" "r$round-A-launchB"; offline B "$roots/B-with-A" "r$round-B-launchA"
done
python3 benchmarks/show_tuned.py "$roots"/* > "$out/tuned.txt"
python3 benchmarks/offline_summary.py "$out"/cold-*.json "$out"/r*.json
