#!/usr/bin/env bash
# Host phases per pass of a host change on one GPU (written for admission against the running requests' budget
# bound, engine/reservation.py): this tree (A) against a checkout from before it (B, e.g. `git archive d006cff^ |
# tar -x -C DIR`), `offline_steps.py` B A B A on W2 (1,024 requests of 8-32 tokens in, 8-64 out) and on the
# nano-vllm workload, one cache root for both sides. Prints each run's throughput and its pass table (host ms per
# pass by phase: schedule / launch / wait / outputs).
# About 5 minutes.
# Usage: bash benchmarks/gpu_admission_ab.sh B_DIR [OUTDIR]
set -uo pipefail
source "$(dirname "$0")/ab_helpers.sh"  # ab_dirs, side_dir
ab_dirs "$1" "${2:-admission-ab}"
print_versions
W2="--num-requests 1024 --input-len 8 32 --output-len 8 64"
NANO="--num-requests 256"
for name in w2 nano; do
  if [ "$name" = w2 ]; then args=$W2; else args=$NANO; fi
  for round in 1 2; do
    for side in B A; do
      dir=$(side_dir "$side")
      # shellcheck disable=SC2086
      (cd "$dir" && TIERLM_CACHE_DIR=$here/.cache-admission-shared PYTHONPATH=$dir timeout "${RUN_TIMEOUT:-150}" \
        python3 benchmarks/offline_steps.py $args --json "$out/$name-$side$round.json" \
        > "$out/$name-$side$round.txt" 2>&1) || echo "$name $side$round failed"
      echo "== $name $side$round"
      grep -E "output tokens in|^(passes|prefill|mixed|decode|all)" "$out/$name-$side$round.txt" | head -n 12
    done
  done
done
