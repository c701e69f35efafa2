#!/usr/bin/env bash
# Temperature sampling fused into one pass (`kernels.race_sample`), this tree (A) against another checkout (B, e.g.
# `git archive COMMIT | tar -x -C DIR`) on one GPU: the sampler's GPU tests, the sampler alone per batch size
# (bench_sampler.py), then benchmarks/gpu_offline_ab.sh (offline throughput A B A B, batch-1 TPOT per side).
# About 6 minutes. Usage: bash benchmarks/gpu_sampler_ab.sh B_DIR [OUTDIR]
set -uo pipefail
PYTHONPATH=$PWD timeout 60 python3 benchmarks/bench_sampler.py --sweep 2>&1 | tail -n 9
TESTS="tests/kernels/test_race_sample.py tests/engine/test_stopping_and_sampling.py tests/utils/test_upload.py" \
  bash "$(dirname "$0")/gpu_offline_ab.sh" "$1" "${2:-sampler-ab}"
