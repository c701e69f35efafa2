#!/usr/bin/env bash
# MoE decode at small batches on one GPU, this tree (A) against another checkout (B, e.g. `git archive COMMIT | tar
# -x -C DIR`). Parts (PARTS, default tseqpc):
#  (t) the GPU tests of the kernels a MoE / latent-attention decode step runs;
#  (s) every launch the fused MoE tuner times, replayed from a CUDA graph, at decode-sized token counts for
#      DeepSeek-V2-Lite's and Qwen3-30B-A3B's routed experts (`moe_tune_stability.py`, two rounds, not eager);
#  (e) DeepSeek-V2-Lite's decode steps at batches 1-16, (q) Qwen3-30B-A3B's at 1 and 4 (`profile_engine.py`,
#      dummy weights, one fresh cache root per side, so each side tunes its own launches);
#  (p) this tree's DeepSeek-V2-Lite batch-1 step under the torch profiler (kernel by kernel);
#  (c) this tree's fast path against the torch reference: tiny MoE / latent-attention models in float32 token for
#      token, DeepSeek-V2-Lite in bf16 on 4 prompts (`gpu_engine_check.py`: first divergence, logprob closeness).
# About 12 minutes in all. Usage: [PARTS=...] bash benchmarks/gpu_moe_decode.sh B_DIR OUTDIR
set -uo pipefail
source "$(dirname "$0")/ab_helpers.sh"  # ab_dirs, side_root, print_versions, stamp, profile_side
ab_dirs "$1" "${2:-moe-decode}"
PARTS=${PARTS:-tseqpc}
print_versions

if [[ $PARTS == *t* ]]; then
  stamp "(t) tests"
  PYTHONPATH=$here timeout 240 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_fused_moe.py \
    tests/layers/test_moe.py tests/kernels/test_tune_timing.py tests/kernels/test_decoupled_rope.py \
    tests/layers/test_decoupled_rotary.py tests/kernels/test_mla_decode.py tests/attention/test_mla_triton.py \
    tests/kernels/test_moe_route.py tests/models/test_deepseek.py tests/models/test_deepseek_moe.py \
    tests/models/test_qwen3_moe.py \
    2>&1 | tail -n 3
fi
if [[ $PARTS == *s* ]]; then
  for shape in 64,2048,1408,6 128,2048,768,8; do
    stamp "(s) $shape"
    PYTHONPATH=$here timeout 150 python3 benchmarks/moe_tune_stability.py --rounds 2 --no-eager --shape "$shape" \
      --tokens 1,2,4,8,16 > "$out/stability-${shape//,/-}.txt" 2> "$out/stability-${shape//,/-}.err" || echo "failed"
    cat "$out/stability-${shape//,/-}.txt"
  done
fi
steps() {  # MODEL BATCHES: decode steps of builtin:MODEL per side, each side on its own fresh cache root
  for side in A B; do
    stamp "profile_engine $1 $side"
    profile_side moe "$side" "steps-$1-$side" 200 --model "builtin:$1" --load-format dummy --skip-tokenizer-init \
      --batches "$2" --prefill-len 0 --steps 50
    cat "$out/steps-$1-$side.txt"
  done
}
[[ $PARTS == *e* ]] && steps deepseek-v2-lite 1,2,4,8,16
[[ $PARTS == *q* ]] && steps qwen3-30b-a3b 1,4
if [[ $PARTS == *p* ]]; then  # this tree's batch-1 step kernel by kernel (after part e: its cache root is warm)
  stamp "(p) DeepSeek-V2-Lite batch 1 under the torch profiler"
  TIERLM_CACHE_DIR=$(side_root moe A) PYTHONPATH=$here timeout 200 python3 benchmarks/profile_engine.py \
    --model builtin:deepseek-v2-lite --load-format dummy --skip-tokenizer-init --batches 1 --prefill-len 0 \
    --steps 50 --torch-profile --profile-rows 45 > "$out/profile.txt" 2> "$out/profile.err" || echo "failed"
  tail -n 4 "$out/profile.txt"
fi
if [[ $PARTS == *c* ]]; then
  stamp "(c) fast path against the torch reference"
  TIERLM_CACHE_DIR=$(side_root moe A) PYTHONPATH=$here timeout 250 python3 benchmarks/gpu_engine_check.py \
    --archs qwen3_moe,deepseek_v2,deepseek_v3 --model builtin:deepseek-v2-lite --prompts 4 --max-tokens 32 \
    > "$out/check.txt" 2> "$out/check.err" || echo "check exit $?"
  cut -c1-160 "$out/check.txt"
fi
python3 benchmarks/show_tuned.py "$here"/.cache-moe-* > "$out/tuned.txt" 2>&1 || true
stamp done
