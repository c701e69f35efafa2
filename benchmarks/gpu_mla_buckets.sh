#!/usr/bin/env bash
# One call on one GPU: latent attention's prompts without a prefix on cuDNN over bucketed lengths
# (`tierlm/attention/causal_sdpa.py`), this tree (A) against another checkout (B, e.g. `git archive main`):
#  1. the GPU cases of the causal SDPA calls and of both MLA backends' forms;
#  2. `bench_mla_sdpa.py`: per-shape first calls and steady times, the engine's calls among them;
#  3. DeepSeek-V2-Lite (dummy weights), 48 prompts of 2K-8K tokens, B A per round, each side its own fresh cache
#     root (round 1 tunes kernels; its `new_kernels` says how many compiled inside the timed run); WORKLOADS
#     (`;`-separated `bench offline` arguments) replaces it.
# Usage: [ROUNDS=2] [WORKLOADS=...] bash benchmarks/gpu_mla_buckets.sh B_DIR OUTDIR
set -uo pipefail
source "$(dirname "$0")/ab_helpers.sh"  # stamp, print_versions
mkdir -p "$2"; out=$(cd "$2" && pwd)
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
print_versions
stamp "1. GPU tests"
timeout 240 python3 -m pytest -q tests/attention/test_causal_sdpa.py tests/attention/test_mla_forms.py \
  tests/attention/test_mla_torch.py 2>&1 | tail -4
stamp "2. SDPA per shape"
timeout 120 python3 benchmarks/bench_mla_sdpa.py 2>&1 | tail -8
stamp "3. workloads"
MODEL=deepseek-v2-lite ROUNDS=${ROUNDS:-2} RUN_TIMEOUT=${RUN_TIMEOUT:-150} ROOT_NAME=buckets \
  WORKLOADS=${WORKLOADS:-"--num-requests 48 --input-len 2048 8192 --output-len 16 64"} \
  bash benchmarks/gpu_ab_workloads.sh "$1" "$out/workloads"
grep -h "prompt lengths from" "$out"/workloads/*-A.err | head -2
stamp done
