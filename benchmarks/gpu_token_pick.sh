#!/usr/bin/env bash
# The step changes after eb861a3, this tree (A) against a checkout from before them (B, e.g. `git archive COMMIT | tar
# -x -C DIR`), on one GPU: a step's tokens in one launch (`kernels.race_sample.pick_tokens`: greedy argmax or the
# race, and the store into the token table), a pass's token inputs expanded on the device
# (`step_metadata.expand_tokens`), a decode graph that starts with its first layer (the pad launch reads each row's
# input id and slot; decode attention reads the runner's rows and lengths in place). PARTS picks what runs, in order:
#   tests   - the kernels', the sampler's and the backends' tests, the engine through the fused pick, the captured
#             passes; then gpu_engine_check.py (the fast path with graphs against the torch path, token for token)
#   sampler - bench_sampler.py: torch (argmax or six passes, then the store) against the one launch, per batch,
#             at Qwen3's and Llama-3's vocabularies
#   steps   - profile_engine.py decode steps B A B A: Qwen3-0.6B at batch 1, 64 and 256, Llama-3.1-8B at batch 1
#   offline - gpu_offline_ab.sh: the nano-vllm workload A B A B (temperature 0.6), then the batch-1 TPOT per side
# About 3 + 1 + 5 + 5 minutes.
# Usage: [PARTS="tests sampler steps offline"] bash benchmarks/gpu_token_pick.sh B_DIR [OUTDIR]
set -uo pipefail
parts=${PARTS:-tests sampler steps offline}
source "$(dirname "$0")/ab_helpers.sh"  # ab_dirs, side_dir
ab_dirs "$1" "${2:-token-pick}"
print_versions
if [[ $parts == *tests* ]]; then
  PYTHONPATH=$here timeout 300 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_race_sample.py \
    tests/engine/test_fused_pick.py tests/engine/test_stopping_and_sampling.py tests/utils/test_upload.py \
    tests/kernels/test_specialization.py tests/kernels/test_step_metadata.py tests/engine/test_mixed_graph.py \
    tests/attention/test_decode_scratch.py tests/attention/test_triton_backend.py tests/attention/test_mla_triton.py \
    2>&1 | tail -n 3
  PYTHONPATH=$here timeout 300 python3 benchmarks/gpu_engine_check.py --prompts 16 --max-tokens 64 \
    --archs llama,qwen3,deepseek_v2 > "$out/engine-check.txt" 2>&1; echo "gpu_engine_check exit $?"
  tail -n 8 "$out/engine-check.txt"
fi
if [[ $parts == *sampler* ]]; then
  for vocab in 151936 128256; do
    PYTHONPATH=$here timeout 120 python3 benchmarks/bench_sampler.py --batches 1,4,64,256 --vocab $vocab \
      2>&1 | tail -n 17
  done
fi
steps() {  # SIDE TAG ARGS...: one profile_engine run with SIDE's code and cache root
  local side=$1 tag=$2 dir; shift 2; dir=$(side_dir "$side")
  (cd "$dir" && TIERLM_CACHE_DIR=$here/.cache-pick-$side PYTHONPATH=$dir timeout 240 python3 \
    benchmarks/profile_engine.py --prefill-len 0 --steps 200 "$@" > "$out/$tag-$side.txt" 2>&1) \
    || echo "$tag $side failed (exit $?)"
  echo "$tag $side:"; grep -A3 "batch *ms/step" "$out/$tag-$side.txt"
}
if [[ $parts == *steps* ]]; then
  for side in B A B A; do steps $side qwen --batches 1,64,256; done
  for side in B A B A; do steps $side llama --model builtin:llama-3.1-8b --batches 1; done
fi
if [[ $parts == *offline* ]]; then
  bash "$here/benchmarks/gpu_offline_ab.sh" "$base" "$out/offline"
fi
