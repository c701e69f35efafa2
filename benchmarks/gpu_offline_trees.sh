#!/usr/bin/env bash
# Qwen3-0.6B's offline throughput (nano-vllm workload, temperature 0.6, dummy weights) of several checkouts on one
# GPU: each TAG=DIR (`.` for this tree; others e.g. `git archive COMMIT | tar -x -C DIR`) gets its own cache root
# and one uncounted run that fills it, then ROUNDS (2) rounds run the trees in turn. RUN_TIMEOUT (150) seconds per
# run. About 30 s per run after the first. Usage: bash benchmarks/gpu_offline_trees.sh OUTDIR TAG=DIR TAG=DIR...
set -uo pipefail
out=$(mkdir -p "$1" && cd "$1" && pwd); shift
here=$PWD
export PYTHONUNBUFFERED=1
source "$(dirname "$0")/ab_helpers.sh"  # print_versions
print_versions

offline() {  # TAG DIR RUN: one `bench offline` run with DIR's code
  local dir; dir=$(cd "$2" && pwd)
  (cd "$dir" && TIERLM_CACHE_DIR=$here/.cache-trees-$1 PYTHONPATH=$dir timeout "${RUN_TIMEOUT:-150}" python3 -m tierlm \
    bench offline --model builtin:qwen3-0.6b --load-format dummy --skip-tokenizer-init --json > "$out/$3.json" \
    2> "$out/$3.err") || echo "$3 failed"
}
for tree in "$@"; do offline "${tree%%=*}" "${tree#*=}" "cold-${tree%%=*}"; done
for round in $(seq 1 "${ROUNDS:-2}"); do
  for tree in "$@"; do offline "${tree%%=*}" "${tree#*=}" "r$round-${tree%%=*}"; done
done
python3 benchmarks/show_tuned.py "$here"/.cache-trees-* > "$out/tuned.txt"
python3 benchmarks/offline_summary.py "$out"/cold-*.json "$out"/r*.json
