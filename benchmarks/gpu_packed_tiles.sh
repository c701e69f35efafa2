#!/usr/bin/env bash
# The packed order's work table (kernels/packed_tiles.py: written once per captured pass, read by every layer's
# extend programs) against the search each program made before it, on one GPU: this tree (A) against a checkout
# from before it (B, e.g. `git archive 5fedd1d | tar -x -C DIR`). PARTS picks what runs, in this order:
#   tests  - the extend kernel's cases (the table's among them), the step metadata kernels (a captured pass's
#            inputs in one launch) and the captured-pass engine tests on the GPU
#   extend - the kernel alone by graph replays at short shapes and two long ones: heavy_first, packed with the
#            table built beforehand (A), packed building it in the timed call (A), packed searching (B)
#   ab     - `bench offline` B then A, three times, on one cache root: W1 (512 requests of 16-128 tokens) and W2
#            (1,024 of 8-32), whose prefill passes are captured ones
# About 2 + 2 + 5 minutes.
# Usage: [PARTS="tests extend ab"] bash benchmarks/gpu_packed_tiles.sh B_DIR [OUTDIR]
set -uo pipefail
parts=${PARTS:-tests extend ab}
source "$(dirname "$0")/ab_helpers.sh"  # ab_dirs
ab_dirs "$1" "${2:-packed-tiles}"
print_versions
if [[ $parts == *tests* ]]; then
  PYTHONPATH=$here timeout 240 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_extend_knobs.py \
    tests/kernels/test_step_metadata.py tests/engine/test_mixed_graph.py 2>&1 | tail -n 3
fi
if [[ $parts == *extend* ]]; then
  shapes=16:0:512,64:0:24,256:0:16,8:0:24,4:0:72,32:0:64,2:0:128,1:0:8192,4:2048:2048
  PYTHONPATH=$here timeout 200 python3 benchmarks/bench_extend.py --graph --shapes $shapes \
    --variants '[{}, {"order": "packed", "prebuilt_tiles": true}, {"order": "packed"}]' \
    > "$out/extend-A.txt" 2>&1 || echo "bench_extend A failed (exit $?)"
  (cd "$base" && PYTHONPATH=$base timeout 150 python3 benchmarks/bench_extend.py --graph --shapes $shapes \
    --variants '[{"order": "packed"}]' > "$out/extend-B.txt" 2>&1) || echo "bench_extend B failed (exit $?)"
  echo "A:"; grep -A28 "^batch" "$out/extend-A.txt" | grep -v "^$\|best"
  echo "B (packed, each program searching):"; grep -A10 "^batch" "$out/extend-B.txt" | grep -v "^$\|best"
fi
if [[ $parts == *ab* ]]; then
  W2="--num-requests 1024 --input-len 8 32 --output-len 8 64"
  W1="--num-requests 512 --input-len 16 128 --output-len 16 256"
  SHARED_ROOT=1 ROOT_NAME=tiles WORKLOADS="$W1;$W2;$W1;$W2;$W1;$W2" RUN_TIMEOUT=${RUN_TIMEOUT:-150} \
    bash "$here/benchmarks/gpu_ab_workloads.sh" "$base" "$out/ab"
fi
