#!/usr/bin/env bash
# Decode attention's fused merge (stage 1 merging the splits itself) on one GPU, this tree (A) against a
# checkout without it (B, e.g. `git archive 3196cef | tar -x -C DIR`): the GPU tests of the decode kernel,
# its backend and its start-up timing; the kernel alone both ways at small batches (`bench_attention.py
# --split-sweep`); then per side, each with its own cache root, what the start-up timing chose, Qwen3-0.6B's
# decode steps at 1, 8 and 32 requests, Llama-3.1-8B's batch-1 step and Qwen3-0.6B's batch-1 TPOT.
# About 6 minutes. Usage: bash benchmarks/gpu_fused_merge.sh B_DIR [OUTDIR]
set -uo pipefail
source "$(dirname "$0")/ab_helpers.sh"  # ab_dirs, side_dir, b1_tpot, print_b1
ab_dirs "$1" "${2:-fused-merge}"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
PYTHONPATH=$here timeout 240 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_kernels.py \
  tests/attention/test_triton_backend.py tests/attention/test_triton_autotune.py 2>&1 | tail -n 3
PYTHONPATH=$here timeout 150 python3 benchmarks/bench_attention.py --decode-shapes 1:512,1:2048,8:2048,32:1024 \
  --split-sweep 2>&1 | grep -v -i warn > "$out/sweep.txt"
tail -n 6 "$out/sweep.txt"
for side in A B; do
  dir=$(side_dir $side)
  export TIERLM_CACHE_DIR=$here/.cache-merge-$side
  (cd "$dir" && PYTHONPATH=$dir timeout 150 python3 benchmarks/profile_engine.py --batches 1,8,32 --prefill-len 0 \
    > "$out/qwen-$side.txt" 2>&1) || echo "qwen $side failed"
  (cd "$dir" && PYTHONPATH=$dir timeout 150 python3 benchmarks/profile_engine.py --model builtin:llama-3.1-8b \
    --batches 1 --prefill-len 0 --no-small-batch-gemm > "$out/llama-$side.txt" 2>&1) || echo "llama $side failed"
  b1_tpot "$dir" "$out/b1-$side" TIERLM_CACHE_DIR="$TIERLM_CACHE_DIR"
  echo "== $side (the start-up timing's choice per model shape, from its cache root):"
  python3 - "$TIERLM_CACHE_DIR" <<'PY'
import json, pathlib, sys
for f in sorted(pathlib.Path(sys.argv[1], "autotune", "triton_decode").glob("*.json")):
    r = json.loads(f.read_text()).get("results", {})
    print(" ", {k: r.get(k) for k in ("decode_block_n", "decode_fused_merge", "merge_us", "merge_max_diff")})
PY
  grep -h -A4 "^ batch" "$out/qwen-$side.txt" "$out/llama-$side.txt"
  print_b1 "$out/b1-$side.json"
done
