#!/usr/bin/env bash
# Decode steps' skew rule (`TritonAttentionConfig.decode_skew`: from how skewed a step of each size splits its KV by
# tokens across the batch) against another rule, in the engine on one GPU: Qwen3-0.6B (dummy weights) on
# `tierlm bench offline` workloads of few requests with one long prompt among equal ones, where the rules differ,
# and the nano-vllm workload, where they should not; this tree's rule (A) and B_SKEW (default the single threshold
# of 4 it replaced) in turn on one cache root, ROUNDS (2) rounds after a first run that fills it.
# WORKLOADS: `;`-separated `bench offline` argument lists (default: the nano-vllm workload (empty list), then 16, 32
# and 64 requests of 1,000 tokens with one of 4,000, 512 out each). Usage: [B_SKEW=...] [WORKLOADS=...] bash benchmarks/gpu_skew_rule.sh [OUTDIR]
set -uo pipefail
source "$(dirname "$0")/ab_helpers.sh"  # gpu_start
gpu_start "${1:-skew-rule}"  # sets out, here; PYTHONPATH
export TIERLM_CACHE_DIR=${TIERLM_CACHE_DIR:-$here/.cache-skew}
b_skew=${B_SKEW:-((0, 4.0),)}
few="--input-len 1000 1000 --output-len 512 512 --long-prompts 1 4000"
workloads=${WORKLOADS:-";--num-requests 16 $few;--num-requests 32 $few;--num-requests 64 $few"}
run() {  # TAG [FIELD=VALUE] -- ARGS...: one `bench offline` run, the attention config changed by FIELD=VALUE
  local tag=$1; shift
  local change=()
  [[ $1 != -- ]] && { change=("$1"); shift; }
  shift  # --
  timeout "${RUN_TIMEOUT:-120}" python3 benchmarks/with_attention_config.py "${change[@]}" decode_balanced=16 -m \
    tierlm bench offline --model builtin:qwen3-0.6b --load-format dummy --skip-tokenizer-init --json "$@" \
    > "$out/$tag.json" 2> "$out/$tag.err" || { echo "$tag failed"; tail -3 "$out/$tag.err"; }
  python3 benchmarks/offline_summary.py "$out/$tag.json"
}
run cold -- --num-requests 16 $few
IFS=';' read -ra lists <<< "$workloads"
for round in $(seq 1 "${ROUNDS:-2}"); do
  for i in "${!lists[@]}"; do
    # shellcheck disable=SC2086  # each workload is a word list
    run "w$i-r$round-A" -- ${lists[$i]}
    # shellcheck disable=SC2086
    run "w$i-r$round-B" "decode_skew=$b_skew" -- ${lists[$i]}
  done
done
