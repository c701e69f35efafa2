#!/usr/bin/env bash
# Captured prefill passes of up to 64 prompts (the extend kernel's packed order) on one GPU, this tree (A) against a
# checkout from before them (B, e.g. `git archive 62b2eee | tar -x -C DIR`): PARTS picks what runs, in this order:
#   tests  - the extend kernel's cases (packed ones included) and the captured-pass engine tests on the GPU
#   extend - the kernel alone, heavy_first against packed (bench_extend.py), one long prompt, many short ones, and
#            prompts over a cached prefix
#   ab     - `bench offline` B then A, twice, on one cache root: many short requests (W2, where a pass held more
#            than 8 prompts 29 times in 114), W1, and the nano-vllm workload (its 8K passes hold about 15 prompts)
#   steps  - A's passes on W2 (`offline_steps.py`), then the same run under cProfile: where a pass's host launch
#            goes (not in the default PARTS)
#   chunks - whether W1 loses to the 64-prompt passes (not in the default PARTS): the extend launches of W1's and
#            W2's passes, heavy_first against packed, timed by graph replays (the device's time alone), then W1 and
#            W2 on this tree against a copy of it whose captured passes hold 8 prompts (B_DIR is not used)
# About 2 + 1 + 6 (+ 2 + 4) minutes.
# Usage: [PARTS="tests extend ab"] bash benchmarks/gpu_packed_prefill.sh B_DIR [OUTDIR]
set -uo pipefail
parts=${PARTS:-tests extend ab}
source "$(dirname "$0")/ab_helpers.sh"  # ab_dirs
ab_dirs "$1" "${2:-packed-prefill}"
print_versions
if [[ $parts == *tests* ]]; then
  PYTHONPATH=$here timeout 240 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_extend_knobs.py \
    tests/engine/test_mixed_graph.py 2>&1 | tail -n 3
fi
if [[ $parts == *extend* ]]; then
  PYTHONPATH=$here timeout 150 python3 benchmarks/bench_extend.py --shapes 1:0:8192,16:0:512,64:0:24,4:2048:2048 \
    --variants '[{}, {"order": "packed"}]' > "$out/extend.txt" 2>&1 || echo "bench_extend failed (exit $?)"
  grep -A12 "^batch" "$out/extend.txt"
fi
if [[ $parts == *ab* ]]; then
  W2="--num-requests 1024 --input-len 8 32 --output-len 8 64"
  W1="--num-requests 512 --input-len 16 128 --output-len 16 256"
  SHARED_ROOT=1 ROOT_NAME=packed WORKLOADS="$W2;$W1;--num-requests 256;$W2;$W1;--num-requests 256" \
    bash "$here/benchmarks/gpu_ab_workloads.sh" "$base" "$out/ab"
fi
if [[ $parts == *chunks* ]]; then
  PYTHONPATH=$here timeout 150 python3 benchmarks/bench_extend.py --graph \
    --shapes 16:0:512,64:0:24,256:0:16,8:0:24,4:0:72,8:0:72,32:0:64,2:0:128 \
    --variants '[{}, {"order": "packed"}]' > "$out/extend-graph.txt" 2>&1 || echo "bench_extend failed (exit $?)"
  grep -A18 "^batch" "$out/extend-graph.txt"
  eight=$(mktemp -d)  # outside this tree and OUTDIR: the copy is not copied into itself
  (cd "$here" && tar --exclude='./.*' -cf - .) | tar -xf - -C "$eight"
  sed -i 's/^MAX_CHUNKS = 64$/MAX_CHUNKS = 8/' "$eight/tierlm/engine/mixed_graph.py"
  grep -q "^MAX_CHUNKS = 8$" "$eight/tierlm/engine/mixed_graph.py" \
    || echo "MAX_CHUNKS not found: both sides are this tree"
  W2="--num-requests 1024 --input-len 8 32 --output-len 8 64"
  W1="--num-requests 512 --input-len 16 128 --output-len 16 256"
  SHARED_ROOT=1 ROOT_NAME=chunks WORKLOADS="$W1;$W2;$W1;$W2;$W1;$W2" \
    bash "$here/benchmarks/gpu_ab_workloads.sh" "$eight" "$out/chunks"
  rm -rf "$eight"
fi
if [[ $parts == *steps* ]]; then
  PYTHONPATH=$here TIERLM_CACHE_DIR=$here/.cache-packed-shared timeout 240 python3 benchmarks/offline_steps.py \
    --num-requests 1024 --input-len 8 32 --output-len 8 64 --host-profile 40 --json "$out/steps-w2.json" \
    > "$out/steps-w2.txt" 2>&1 || echo "offline_steps failed (exit $?)"
  grep -v "^INFO" "$out/steps-w2.txt" | head -n 80
fi
