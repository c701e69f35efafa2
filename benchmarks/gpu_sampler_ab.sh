#!/usr/bin/env bash
# Temperature sampling fused into one pass (`kernels.race_sample`), this tree (A) against another checkout (B, e.g.
# `git archive COMMIT | tar -x -C DIR`) on one GPU: the sampler's GPU tests, the sampler alone per batch size
# (bench_sampler.py), then Qwen3-0.6B's offline throughput (nano-vllm workload, temperature 0.6, dummy weights)
# in the order A B A B (each side's first run fills its cache root and is not counted) and the batch-1 TPOT
# (128 in / 512 out) per side. About 6 minutes. Usage: bash benchmarks/gpu_sampler_ab.sh B_DIR [OUTDIR]
set -uo pipefail
source "$(dirname "$0")/ab_helpers.sh"  # ab_dirs, side_dir, b1_tpot, print_b1
ab_dirs "$1" "${2:-sampler-ab}"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
PYTHONPATH=$here timeout 150 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_race_sample.py \
  tests/engine/test_stopping_and_sampling.py tests/utils/test_upload.py 2>&1 | tail -n 2
PYTHONPATH=$here timeout 60 python3 benchmarks/bench_sampler.py --sweep 2>&1 | tail -n 9

offline() {  # SIDE TAG: one `bench offline` run with SIDE's code
  local dir; dir=$(side_dir "$1")
  (cd "$dir" && TIERLM_CACHE_DIR=$here/.cache-sampler-$1 PYTHONPATH=$dir timeout 120 python3 -m tierlm bench \
    offline --model builtin:qwen3-0.6b --load-format dummy --skip-tokenizer-init --json > "$out/$2.json" \
    2> "$out/$2.err") || echo "$2 failed"
}
offline A cold-A; offline B cold-B
for round in 1 2; do offline A "r$round-A"; offline B "r$round-B"; done
for side in A B; do
  b1_tpot "$(side_dir $side)" "$out/b1-$side" TIERLM_CACHE_DIR="$here/.cache-sampler-$side"
done
python3 benchmarks/offline_summary.py "$out"/r*.json "$out"/b1-*.json
