#!/usr/bin/env bash
# The q/k norm and rotary applied inside decode attention (`TritonAttentionConfig.decode_fused_rope`) against their
# own pass, on one tree and one cache root (so both settings run the same tuned launches): the kernel's GPU tests,
# then Qwen3-0.6B's offline workload (nano-vllm, dummy weights) with the setting 0 and 1 in turn, ROUNDS (2) rounds
# after an uncounted first run that fills the root, then the batch-1 TPOT (128 in / 512 out) with each and with
# the L2 prefetches off (`TIERLM_L2_PREFETCH=0`); with GOALS=1 (default) also the Llama-3.1-8B batch-1 step with each
# setting (benchmarks/profile_engine.py) and the extend kernel at 8K (benchmarks/bench_extend.py), #20's other goals.
# About 5 minutes, 8 with GOALS=1. Usage: bash benchmarks/gpu_fused_rope_ab.sh [OUTDIR]
set -uo pipefail
source "$(dirname "$0")/ab_helpers.sh"  # ab_dirs, b1 helpers
ab_dirs . "${1:-fused-rope-ab}"
print_versions
PYTHONPATH=$here timeout 200 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_rope_in_stage1.py \
  tests/kernels/test_fused.py tests/kernels/test_l2_prefetch.py 2>&1 | tail -n 2
export TIERLM_CACHE_DIR=$here/.cache-fused-rope PYTHONPATH=$here

with_rope() {  # SETTING TAG ARGS...: one `bench offline` run with decode_fused_rope=SETTING
  local setting=$1 tag=$2; shift 2
  timeout "${RUN_TIMEOUT:-150}" python3 benchmarks/with_attention_config.py "decode_fused_rope=$setting" -m tierlm \
    bench offline --model builtin:qwen3-0.6b --load-format dummy --skip-tokenizer-init --json "$@" \
    > "$out/$tag.json" 2> "$out/$tag.err" || echo "$tag failed"
}
with_rope 1 cold-1
for round in $(seq 1 "${ROUNDS:-2}"); do
  for setting in 1 0; do with_rope "$setting" "r$round-rope$setting"; done
done
b1=(--num-requests 1 --input-len 128 128 --output-len 512 512)
for setting in 1 0; do with_rope "$setting" "b1-rope$setting" "${b1[@]}"; done
TIERLM_L2_PREFETCH=0 with_rope 0 b1-rope0-no-prefetch "${b1[@]}"  # the batch-1 TPOT before 9194fc8's prefetches
if [ "${GOALS:-1}" = 1 ]; then
  for setting in 1 0; do
    timeout 200 python3 benchmarks/with_attention_config.py "decode_fused_rope=$setting" benchmarks/profile_engine.py \
      --model builtin:llama-3.1-8b --batches 1 --prefill-len 0 --steps 100 > "$out/llama-rope$setting.txt" 2>&1 \
      || echo "llama-rope$setting failed"
  done
  timeout 120 python3 benchmarks/bench_extend.py --shapes 1:0:8192,4:2048:2048 > "$out/extend.txt" 2>&1 \
    || echo "bench_extend failed"
fi
python3 benchmarks/show_tuned.py "$TIERLM_CACHE_DIR" > "$out/tuned.txt"
python3 benchmarks/offline_summary.py "$out"/cold-*.json "$out"/r*.json "$out"/b1-*.json
if [ "${GOALS:-1}" = 1 ]; then
  for setting in 1 0; do
    echo "== Llama-3.1-8B, decode_fused_rope=$setting"; grep -v "^INFO" "$out/llama-rope$setting.txt" \
      | grep -A3 "^decode steps"
  done
  grep -A4 "^batch" "$out/extend.txt"
fi
