#!/usr/bin/env bash
# Penalties on one GPU: the kernel tests (the fused pick under penalties, the race sampler), the engine's fused
# pick against its torch path token for token (benchmarks/penalty_check.py), then what a repetition penalty costs
# (Qwen3-0.6B, dummy bf16 weights, one cache root): the nano-vllm workload and a batch-1 request (128 in / 512
# out) at --repetition-penalty 1 and 1.05 with this tree, and at 1.05 with tree B (penalties by torch passes).
# Usage: bash benchmarks/gpu_penalties.sh B_TREE OUT
set -uo pipefail
source "$(dirname "$0")/ab_helpers.sh"  # ab_dirs, print_versions, stamp
ab_dirs "$1" "$2"
export TIERLM_CACHE_DIR=${TIERLM_CACHE_DIR:-$here/.cache-penalties}
print_versions
stamp kernel tests
PYTHONPATH=$here timeout 240 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_race_penalties.py \
  tests/kernels/test_race_sample.py 2>&1 | tail -n 3
stamp engine check
PYTHONPATH=$here timeout 240 python3 benchmarks/penalty_check.py --prompts 32 --max-tokens 128 2>&1 \
  | grep -v "INFO" | tail -n 4

offline() {  # SIDE TAG ARGS...: one bench offline run of SIDE's tree into OUT/TAG.json
  local side=$1 tag=$2 dir; shift 2
  dir=$(side_dir "$side")
  (cd "$dir" && PYTHONPATH=$dir timeout 200 python3 -m tierlm bench offline --model builtin:qwen3-0.6b \
    --load-format dummy --skip-tokenizer-init --json "$@" > "$out/$tag.json" 2> "$out/$tag.err") \
    || { echo "$tag failed:"; tail -n 3 "$out/$tag.err"; }
}
b1=(--num-requests 1 --input-len 128 128 --output-len 512 512)
for round in 1 2; do
  stamp "round $round"
  offline A "A-off-$round"
  offline A "A-1.05-$round" --repetition-penalty 1.05
  offline B "B-1.05-$round" --repetition-penalty 1.05
  offline A "A-b1-off-$round" "${b1[@]}"
  offline A "A-b1-1.05-$round" "${b1[@]}" --repetition-penalty 1.05
  offline B "B-b1-1.05-$round" "${b1[@]}" --repetition-penalty 1.05
done
echo
python3 benchmarks/offline_summary.py "$out"/*.json
