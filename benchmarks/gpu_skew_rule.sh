#!/usr/bin/env bash
# Decode steps' skew rule (`TritonAttentionConfig.decode_skew`: from how skewed a step of each size splits its KV by
# tokens across the batch) against another rule, in the engine on one GPU: Qwen3-0.6B (dummy weights) on
# `tierlm bench offline` workloads of few requests with one long prompt among equal ones, where the rules differ,
# and the nano-vllm workload, where they should not. A and B are this tree with A_CHANGE (default none) and with
# B_CHANGE (default the single threshold of 4 the rule by size replaced): space-separated FIELD=VALUE words for
# `with_attention_config.py` (a value without spaces); in turn on one cache root, ROUNDS (2) rounds after a first run
# that fills it. WORKLOADS: `;`-separated `bench offline` argument lists (default: the nano-vllm workload (empty
# list), then 16, 32 and 64 requests of 1,000 tokens with one of 4,000, 512 out each).
# Usage: [A_CHANGE=...] [B_CHANGE=...] [WORKLOADS=...] bash benchmarks/gpu_skew_rule.sh [OUTDIR]
set -uo pipefail
source "$(dirname "$0")/ab_helpers.sh"  # gpu_start
gpu_start "${1:-skew-rule}"  # sets out, here; PYTHONPATH
export TIERLM_CACHE_DIR=${TIERLM_CACHE_DIR:-$here/.cache-skew}
read -ra a_change <<< "${A_CHANGE:-decode_balanced=16}"  # the GPU's default: a change that changes nothing
read -ra b_change <<< "${B_CHANGE:-decode_skew=((0,4.0),)}"
few="--input-len 1000 1000 --output-len 512 512 --long-prompts 1 4000"
workloads=${WORKLOADS:-";--num-requests 16 $few;--num-requests 32 $few;--num-requests 64 $few"}
run() {  # TAG A|B ARGS...: one `bench offline` run with that side's changes
  local tag=$1 side=$2; shift 2
  local -n change=${side,,}_change
  timeout "${RUN_TIMEOUT:-120}" python3 benchmarks/with_attention_config.py "${change[@]}" -m tierlm bench offline \
    --model builtin:qwen3-0.6b --load-format dummy --skip-tokenizer-init --json "$@" \
    > "$out/$tag.json" 2> "$out/$tag.err" || { echo "$tag failed"; tail -3 "$out/$tag.err"; }
  python3 benchmarks/offline_summary.py "$out/$tag.json"
}
# shellcheck disable=SC2086  # $few is a word list
run cold A --num-requests 16 $few
IFS=';' read -ra lists <<< "$workloads"
for round in $(seq 1 "${ROUNDS:-2}"); do
  for i in "${!lists[@]}"; do
    # shellcheck disable=SC2086  # each workload is a word list
    for side in A B; do run "w$i-r$round-$side" $side ${lists[$i]}; done
  done
done
