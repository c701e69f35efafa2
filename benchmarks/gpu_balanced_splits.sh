#!/usr/bin/env bash
# Decode attention with the KV split by tokens across the batch (kernels/balanced_splits.py) against the split per
# request, on one GPU: the kernel and backend tests (float64 / torch-backend references, three dtypes), then
# bench_attention.py's balanced sweep at uniform, mixed and skewed shapes (one long request among short ones); with
# PARTS including `engine`, Qwen3-0.6B's offline workload (nano-vllm, dummy weights), the same with LONG (default
# "1 32000": `bench offline --long-prompts`) and the batch-1 TPOT with `decode_balanced` = FROM (default 16; skewed
# steps only, `decode_skew`) and 0 in turn on one cache root, ROUNDS (2) rounds after a first run that fills it.
# TESTS (default "decode or balanced or backend") selects the GPU tests.
# Usage: [PARTS="kernel engine"] [SHAPES=...] bash benchmarks/gpu_balanced_splits.sh [OUTDIR]
set -uo pipefail
source "$(dirname "$0")/ab_helpers.sh"  # gpu_start
gpu_start "${1:-balanced-splits}"  # sets out, here; PYTHONPATH
export TIERLM_CACHE_DIR=${TIERLM_CACHE_DIR:-$here/.cache-balanced}
shapes=${SHAPES:-1:4096,8:2048,64:1000,64:1000@1x32768,128:100-2048,256:500,256:100-2048,256:500@1x32768,256:500@8x8192}
parts=${PARTS:-kernel}
if [[ $parts == *kernel* ]]; then
  timeout 200 python3 -m pytest -q tests/kernels/test_kernels.py tests/attention/test_triton_backend.py \
    -k "${TESTS:-decode or balanced or backend}" > "$out/tests.txt" 2>&1
  grep -E "^(FAILED|ERROR|E  )" "$out/tests.txt" | head -20
  tail -1 "$out/tests.txt"
  timeout 300 python3 benchmarks/bench_attention.py --balanced-sweep --decode-shapes "$shapes" > "$out/bench.txt" \
    2>&1 || echo "bench failed (exit $?)"
  grep "^split \|shape \|^ *[0-9]*x" "$out/bench.txt" | grep -v " us " | cut -c1-200
  grep "^split " "$out/bench.txt" | cut -c1-220
fi
if [[ $parts == *engine* ]]; then
  run() {  # SETTING TAG ARGS...: one `bench offline` run with decode_balanced=SETTING
    local setting=$1 tag=$2; shift 2
    timeout "${RUN_TIMEOUT:-150}" python3 benchmarks/with_attention_config.py "decode_balanced=$setting" -m tierlm \
      bench offline --model builtin:qwen3-0.6b --load-format dummy --skip-tokenizer-init --json "$@" \
      > "$out/$tag.json" 2> "$out/$tag.err" || { echo "$tag failed"; tail -3 "$out/$tag.err"; }
    python3 benchmarks/offline_summary.py "$out/$tag.json"  # as it comes: a run cut short keeps what it printed
  }
  from=${FROM:-16}
  run "$from" cold
  for round in $(seq 1 "${ROUNDS:-2}"); do
    for setting in "$from" 0; do run "$setting" "r$round-balanced$setting"; done
    # shellcheck disable=SC2086  # LONG is two words
    for setting in "$from" 0; do run "$setting" "long$round-balanced$setting" --long-prompts ${LONG:-1 32000}; done
  done
  for setting in "$from" 0; do
    run "$setting" "b1-balanced$setting" --num-requests 1 --input-len 128 128 --output-len 512 512
  done
fi
