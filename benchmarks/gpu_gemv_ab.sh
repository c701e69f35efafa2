#!/usr/bin/env bash
# Small-batch linear layers, this tree (A) against another checkout (B, e.g. `git archive COMMIT | tar -x -C
# DIR`) on one GPU: the GEMV kernel tests, the kernel against cuBLAS per weight shape at batch 1
# (bench_gemv.py --quick) and the engine's tuning per shape and prologue (--tuner); then per side Qwen3-0.6B
# decode steps at batch 1 and 4 and its batch-1 TPOT (`bench offline`, one request, 128 in / 512 out), and
# Llama-3.1-8B decode steps at batch 1 in the order A B A B (profile_engine.py; each side tunes its plans into
# a cache root of its own); last a torch profile of A's 8B batch-1 step. About 9 minutes (SKIP_KERNELS=1:
# the engine part only). Usage: bash benchmarks/gpu_gemv_ab.sh B_DIR [OUTDIR]
set -uo pipefail
source "$(dirname "$0")/ab_helpers.sh"  # ab_dirs, side_dir, b1_tpot, print_b1
ab_dirs "$1" "${2:-gemv-ab}"
rm -f "$out/walls.txt"  # appended to by every run below
if [ -z "${SKIP_KERNELS:-}" ]; then  # SKIP_KERNELS=1: only the engine A/B
  PYTHONPATH=$here timeout 120 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_gemv.py \
    tests/layers/test_block.py 2>&1 | tail -n 1
  PYTHONPATH=$here timeout 120 python3 benchmarks/bench_gemv.py --quick --rows 1 > "$out/bench_gemv.txt" 2>&1 \
    || echo "bench_gemv failed (exit $?)"
  grep -A20 "^model" "$out/bench_gemv.txt"
  PYTHONPATH=$here timeout 200 python3 benchmarks/bench_gemv.py --tuner > "$out/tuner.txt" 2>&1 \
    || echo "bench_gemv --tuner failed (exit $?)"
  grep -v "^INFO" "$out/tuner.txt" | grep -v " [24] " | tail -n 25
fi
run() {  # SIDE TAG ARGS...: one profile_engine run; its wall seconds (a first run's include the tuning) in walls.txt
  local side=$1 tag=$2 t0=$SECONDS; shift 2
  local dir; dir=$(side_dir "$side")
  (cd "$dir" && TIERLM_CACHE_DIR=$here/.cache-gemv-$side PYTHONPATH=$dir timeout 240 \
    python3 benchmarks/profile_engine.py "$@" > "$out/$tag-$side.txt" 2>&1) || echo "$tag $side failed"
  echo "$tag $side $((SECONDS - t0)) s" >> "$out/walls.txt"
}
for side in A B; do
  run $side qwen1 --batches 1,4 --prefill-len 0 --steps 100
  dir=$(side_dir "$side")
  b1_tpot "$dir" "$out/b1-$side" TIERLM_CACHE_DIR="$here/.cache-gemv-$side"
done
for round in 1 2; do
  for side in A B; do run $side llama$round --model builtin:llama-3.1-8b --batches 1 --prefill-len 0 --steps 100; done
done
run A llama-profile --model builtin:llama-3.1-8b --batches 1 --prefill-len 0 --steps 20 --torch-profile \
  --profile-batch 1 --profile-rows 40
for side in A B; do
  echo "== $side"; grep -h -A2 "^ batch" "$out/qwen1-$side.txt" | tail -n 2
  for round in 1 2; do grep -h -A1 "^ batch" "$out/llama$round-$side.txt" | tail -n 1; done
  print_b1 "$out/b1-$side.json"
done
cat "$out/walls.txt"
