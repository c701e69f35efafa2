#!/usr/bin/env bash
# The four speed goals of decode and prefill in one call on one H200 (dummy bf16 weights), each against its
# baseline in the same run: first the kernel tests the numbers rest on, then batch-1/4/64 decode steps and an
# 8K prefill (benchmarks/profile_engine.py) with --small-batch-gemv and --no-small-batch-gemv, Qwen3-0.6B's
# offline throughput (nano-vllm workload; a first run fills the cache root and is not counted) and batch-1
# TPOT (three runs, each with its inter-token latency), the machine's own stalls (benchmarks/gpu_stall_probe.py,
# 10 s), the extend kernel's TFLOP/s against the old kernel (benchmarks/bench_extend.py) and the kernels requests
# meet first after the start-up (benchmarks/run_compiles.py). A table last.
# 596 s on a fresh H100 before the tuners' build pool, with the kernel tests on one worker (271 s of it); 346 s
# with the pool and the kernel tests on 8 pytest-xdist workers (93 s), before the second and third batch-1 runs
# and the stall probe. QUICK=1 runs the four goals alone (no kernel tests, no --no-small-batch-gemv runs, no stall
# probe, no run_compiles): for a call with little device time left. Usage: bash benchmarks/gpu_decode_goals.sh
# [OUTDIR]
set -uo pipefail
source "$(dirname "$0")/ab_helpers.sh"  # gpu_start
gpu_start "${1:-decode-goals}"  # sets out, here; PYTHONPATH
export TIERLM_CACHE_DIR=${TIERLM_CACHE_DIR:-$here/.cache-goals}

# the kernel tests build a few hundred variants: on 8 workers where pytest-xdist is installed (carry its wheel)
workers=""
python3 -c "import xdist" 2> /dev/null && workers="-n 8"
quick=${QUICK:-0}
# shellcheck disable=SC2086  # workers is empty or two words
[ "$quick" = 1 ] || timeout 300 python3 -m pytest -q -p no:cacheprovider $workers tests/kernels/test_kernels.py \
  tests/kernels/test_gemv.py tests/layers/test_block.py tests/attention/test_triton_backend.py 2>&1 | tail -n 3

prof() {  # TAG ARGS...: one profile_engine run, its table kept in OUT/TAG.txt
  local tag=$1; shift
  timeout 240 python3 benchmarks/profile_engine.py "$@" > "$out/$tag.txt" 2>&1 || echo "$tag failed (exit $?)"
}
prof qwen-on --batches 1,4,64 --prefill-len 8192
[ "$quick" = 1 ] || prof qwen-off --batches 1,4,64 --prefill-len 0 --no-small-batch-gemv
prof llama-on --model builtin:llama-3.1-8b --batches 1,4 --prefill-len 8192
[ "$quick" = 1 ] || prof llama-off --model builtin:llama-3.1-8b --batches 1,4 --prefill-len 0 --no-small-batch-gemv

offline() {  # TAG ARGS...
  local tag=$1; shift
  timeout 200 python3 -m tierlm bench offline --model builtin:qwen3-0.6b --load-format dummy --skip-tokenizer-init \
    --json "$@" > "$out/$tag.json" 2> "$out/$tag.err" || echo "$tag failed (exit $?)"
}
offline offline-cold
offline offline-on
[ "$quick" = 1 ] || offline offline-off --no-small-batch-gemv
for run in 1 2 3; do  # one request's TPOT is the mean of its 511 gaps: a few stalls move it, so three runs
  offline "b1-$run" --num-requests 1 --input-len 128 128 --output-len 512 512
done

# the machine's own stalls, without the engine (a batch-1 TPOT is read against them)
[ "$quick" = 1 ] || timeout 60 python3 benchmarks/gpu_stall_probe.py --seconds 10 > "$out/stall-probe.txt" 2>&1 \
  || echo "stall probe failed"

timeout 200 python3 benchmarks/bench_extend.py --shapes 1:0:8192,4:2048:2048 \
  --variants '[{}, {"causal_split": false, "order": "request", "tma": false}]' > "$out/extend.txt" 2>&1 \
  || echo "bench_extend failed (exit $?)"

# kernel variants that requests after the start-up launch first (each a compile inside a request on a fresh
# root; expected: none): one request, a burst of short prompts, long prompts
[ "$quick" = 1 ] || timeout 200 python3 benchmarks/run_compiles.py > "$out/run-compiles.txt" 2>&1 \
  || echo "run_compiles failed (exit $?)"

echo
for tag in qwen-on qwen-off llama-on llama-off; do
  [ "$quick" = 1 ] && [[ $tag == *-off ]] && continue  # not run
  echo "== $tag"
  grep -v "^INFO" "$out/$tag.txt" | grep -A6 "^decode steps" | tail -n +2 | grep -v "^prefill"
  grep "^prefill" "$out/$tag.txt"
done
results=()
for tag in offline-cold offline-on offline-off b1-1 b1-2 b1-3; do
  [ "$quick" = 1 ] && [ $tag = offline-off ] || results+=("$out/$tag.json")
done
python3 benchmarks/offline_summary.py "${results[@]}"
grep -A8 "^batch" "$out/extend.txt"
[ "$quick" = 1 ] && exit 0
head -n 4 "$out/stall-probe.txt"
grep -E "^(start-up|run) |^  " "$out/run-compiles.txt" | head -n 20
