#!/usr/bin/env bash
# A/B on one device, in alternation: the engine benchmark (run_gpu_engine.sh) and the multi-turn tier
# benchmark for this tree (A) and for another checkout of the project (B, e.g. an earlier commit unpacked
# with `git archive COMMIT | tar -x -C DIR`). Ratios come from one machine and one run of this script.
# Usage: bash benchmarks/ab_gpu_engine.sh B_DIR OUT [engine|multiturn|all]
set -uo pipefail
base=$1; out=${2:-out}; what=${3:-all}
mkdir -p "$out"
here=$PWD
for round in 1 2; do
  for side in A B; do
    dir=$here; [ "$side" = B ] && dir=$base
    if [ "$what" != multiturn ]; then
      (cd "$dir" && SKIP_PARITY=1 bash benchmarks/run_gpu_engine.sh "$out/engine-$side-$round") 2>&1 \
        | grep -v "^INFO" | sed "s/^/[$side$round] /"
    fi
    if [ "$what" != engine ] && [ "$round" = 1 ]; then
      (cd "$dir" && PYTHONPATH=$dir python3 -m tierlm bench multiturn --num-clients 48 --num-rounds 6 \
        --answer-len 64 --concurrency 8 --modes gpu,l2 --json --output-dir "$out/mt-$side" > "$out/mt-$side.json" \
        2> "$out/mt-$side.err"; echo "[$side] multiturn exit $?"; tail -n 25 "$out/mt-$side.err" | grep -v "^INFO")
    fi
  done
done
