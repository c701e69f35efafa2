#!/usr/bin/env bash
# The extend kernel over an fp8 pool, this tree (A) against another checkout (B, e.g. `git archive COMMIT | tar -x
# -C DIR`) on one GPU: the fp8 and extend GPU cases first (kernels, then the Triton backend's engine parity and
# prefix hits), then bench_extend.py at prefix-hit shapes and a plain 8K prefill: A over fp8 and bf16 pools, B over
# fp8 (A's benchmark scripts over B's package), in ROUNDS (1) rounds of A then B. About 3 minutes.
# MULTITURN=1 adds `bench multiturn` over fp8 with each side's code (every later turn extends a cached prefix).
# Usage: [ROUNDS=1] [SKIP_TESTS=1] [MULTITURN=1] bash benchmarks/gpu_fp8_extend_ab.sh B_DIR [OUT]
set -uo pipefail
source "$(dirname "$0")/ab_helpers.sh"  # ab_dirs
ab_dirs "$1" "${2:-fp8-extend-ab}"
export PYTHONPATH=$here
print_versions
if [ -z "${SKIP_TESTS:-}" ]; then
  timeout 240 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_kernels.py \
    tests/attention/test_triton_backend.py -k "fp8 or extend" > "$out/tests.txt" 2>&1
  grep -E "^(E  |FAILED|[0-9]+ (passed|failed))" "$out/tests.txt" | head -n 30
fi
shapes=${SHAPES:-4:2048:2048,1:16384:512,16:1024:256,1:0:8192}
mix=$(mktemp -d)
cp -r "$here/benchmarks" "$mix/" && ln -s "$base/tierlm" "$mix/tierlm"
for round in $(seq "${ROUNDS:-1}"); do
  timeout 150 python3 benchmarks/bench_extend.py --kv-dtype fp8 --shapes "$shapes" > "$out/a-fp8-r$round.txt" 2>&1 \
    || echo "a fp8 failed"
  (cd "$mix" && PYTHONPATH=$mix timeout 150 python3 benchmarks/bench_extend.py --kv-dtype fp8 --shapes "$shapes") \
    > "$out/b-fp8-r$round.txt" 2>&1 || echo "b fp8 failed"
done
timeout 150 python3 benchmarks/bench_extend.py --shapes "$shapes" > "$out/a-auto.txt" 2>&1 || echo "a auto failed"
if [ -n "${MULTITURN:-}" ]; then  # the engine: multi-turn conversations over an fp8 pool, every turn a prefix hit
  for side in A B; do
    dir=$(side_dir $side)
    (cd "$dir" && TIERLM_CACHE_DIR=$here/.cache-fp8x PYTHONPATH=$dir timeout 200 python3 -m tierlm bench multiturn \
      --model builtin:qwen3-0.6b --load-format dummy --skip-tokenizer-init --kv-cache-dtype fp8 --modes gpu \
      --working-set-factor 0.5 --output-dir "$out/mt-$side" > "$out/mt-$side.txt" 2>&1) || echo "multiturn $side failed"
    echo "== multiturn $side"; grep -v "^INFO\|it/s\|s/it" "$out/mt-$side.txt" | tail -n 16
  done
fi
for f in "$out"/a-fp8-r*.txt "$out"/b-fp8-r*.txt "$out/a-auto.txt"; do \
  echo "== $(basename "$f")"; grep -A6 "^batch" "$f"; done
