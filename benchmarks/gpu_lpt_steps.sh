#!/usr/bin/env bash
# Does decode attention taking a batch longest first (#20) shorten the engine's decode steps, not only the
# kernel alone? Qwen3-0.6B's offline workload pass by pass (offline_steps.py, nano-vllm, dummy weights, one
# GPU) with `decode_longest_first` at each of FROM (0: never) through benchmarks/with_attention_config.py, each
# recorded a second time under the torch profiler (device kernels by total time, stage 1 among them). One cache
# root; the first variant's start pays the builds. About 2 minutes per variant.
# Usage: [FROM="0 16"] [ROWS=14] bash benchmarks/gpu_lpt_steps.sh [OUT]
set -uo pipefail
out=${1:-lpt-steps}; mkdir -p "$out"; out=$(cd "$out" && pwd)
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TIERLM_CACHE_DIR=$PWD/.cache-lpt
for f in ${FROM:-0 16}; do
  timeout 240 python3 benchmarks/with_attention_config.py "decode_longest_first=$f" benchmarks/offline_steps.py \
    --torch-profile "${ROWS:-14}" --json "$out/from$f.json" > "$out/from$f.txt" 2>&1 || echo "from$f failed (exit $?)"
done
for f in ${FROM:-0 16}; do
  echo "== decode_longest_first=$f"; grep "tok/s\|^decode\|^prefill\|^all" "$out/from$f.txt" | head -12
  grep -i "stage1\|stage2\|longest\|gemm\|Self CUDA time total" "$out/from$f.txt" | cut -c1-160 | head -12
done
