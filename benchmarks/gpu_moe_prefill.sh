#!/usr/bin/env bash
# Prefill of the MoE and latent-attention models on one GPU, this tree (A) against another checkout (B, e.g.
# `git archive COMMIT | tar -x -C DIR`). Parts (PARTS, default tkf):
#  (t) the GPU tests of the latent-attention kernels and backend, the graph pieces and the MoE / DeepSeek models;
#  (k) the MLA extend kernel against the torch path it replaces, launch variants (`bench_mla_extend.py`), then
#      the absorbed form against the decompressed one on the same inputs (`bench_mla_forms.py`);
#  (f) DeepSeek-V2-Lite's time to first token at several prompt lengths, then (`MODELS`, default deepseek-v2-lite)
#      each model's (`profile_engine.py --batches "" --prefill-len LENS`, dummy weights, one fresh cache root per
#      side and model), LENS default 128,512,2048,8192;
#  (d) each model of `MODELS`: decode steps at batches `DECODE` (default 1,4), after part f on the same roots;
#  (c) this tree's fast path against the torch reference (`gpu_engine_check.py`, tiny models in float32, then
#      DeepSeek-V2-Lite in bf16 on 4 prompts).
# SIDES (default "A B") picks the trees of parts f and d.
# Usage: [PARTS=...] [MODELS=a,b] [LENS=...] [SIDES=A] bash benchmarks/gpu_moe_prefill.sh B_DIR OUTDIR
set -uo pipefail
source "$(dirname "$0")/ab_helpers.sh"  # ab_dirs, side_root, print_versions, stamp, profile_side
ab_dirs "$1" "${2:-moe-prefill}"
PARTS=${PARTS:-tkf}
MODELS=${MODELS:-deepseek-v2-lite}
LENS=${LENS:-128,512,2048,8192}
DECODE=${DECODE:-1,4}
SIDES=${SIDES:-A B}
print_versions

if [[ $PARTS == *t* ]]; then
  stamp "(t) tests"
  PYTHONPATH=$here timeout 300 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_mla_extend.py \
    tests/kernels/test_mla_decode.py tests/attention/test_mla_triton.py tests/engine/test_piecewise_graph.py \
    tests/models/test_deepseek.py tests/models/test_qwen3_moe.py tests/engine/test_mixed_graph.py \
    tests/kernels/test_moe_route.py tests/attention/test_mla_forms.py tests/kernels/test_decoupled_rope.py \
    2>&1 | tail -n 6
fi
if [[ $PARTS == *k* ]]; then
  stamp "(k) MLA extend kernel"
  PYTHONPATH=$here timeout 240 python3 benchmarks/bench_mla_extend.py > "$out/mla-extend.txt" 2> "$out/mla-extend.err" \
    || { echo "failed:"; tail -n 5 "$out/mla-extend.err"; }
  sed -n '/## summary/,$p' "$out/mla-extend.txt"
  stamp "(k) absorbed against decompressed latent attention"
  PYTHONPATH=$here timeout 180 python3 benchmarks/bench_mla_forms.py > "$out/mla-forms.txt" 2> "$out/mla-forms.err" \
    || { echo "failed:"; tail -n 5 "$out/mla-forms.err"; }
  sed -n '/## ms per layer/,$p' "$out/mla-forms.txt"
fi
profile() {  # MODEL SIDE WHAT ARGS...: profile_engine.py of builtin:MODEL on SIDE's tree and cache root
  local model=$1 side=$2 what=$3; shift 3
  stamp "$what $model $side"
  profile_side "$model" "$side" "$what-$model-$side" "${RUN_TIMEOUT:-240}" --model "builtin:$model" \
    --load-format dummy --skip-tokenizer-init "$@"
  grep -E "prefill of|^ +[0-9]+ " "$out/$what-$model-$side.txt"
  grep -E "captured .* extend passes" "$out/$what-$model-$side.err" | tail -n 1
}
for model in ${MODELS//,/ }; do
  for side in $SIDES; do
    [[ $PARTS == *f* ]] && profile "$model" "$side" prefill --batches "" --prefill-len "$LENS"
    [[ $PARTS == *d* ]] && profile "$model" "$side" decode --batches "$DECODE" --prefill-len 0 --steps 50
  done
done
if [[ $PARTS == *c* ]]; then
  stamp "(c) fast path against the torch reference"
  TIERLM_CACHE_DIR=$(side_root deepseek-v2-lite A) PYTHONPATH=$here timeout 250 python3 benchmarks/gpu_engine_check.py \
    --archs qwen3_moe,deepseek_v2,deepseek_v3 --model builtin:deepseek-v2-lite --prompts 4 --max-tokens 32 \
    > "$out/check.txt" 2> "$out/check.err" || echo "check exit $?"
  cut -c1-160 "$out/check.txt"
fi
stamp done
