#!/usr/bin/env bash
# Qwen3-0.6B's offline workload (nano-vllm's, dummy weights) with `--kv-cache-dtype fp8`, this tree (A) against
# another checkout (B, e.g. `git archive COMMIT | tar -x -C DIR`), and A with the KV cache in the model's dtype,
# on one GPU. Each side has its own cache root; every first run fills it and is not counted, then ROUNDS (1)
# rounds in the order A-fp8 B-fp8 A-auto. Then A's decode steps (profile_engine) at 256 requests of about 512
# tokens, and with LONG=1 64 of 8,192, fp8 and auto. With TESTS="tests/..." those tests of A run first on the
# GPU. RUN_TIMEOUT (200) seconds per run. About 8 minutes.
# Usage: [TESTS=...] bash benchmarks/gpu_fp8_offline_ab.sh B_DIR [OUTDIR]
set -uo pipefail
source "$(dirname "$0")/ab_helpers.sh"  # ab_dirs, side_dir
ab_dirs "$1" "${2:-fp8-offline-ab}"
print_versions
if [ -n "${TESTS:-}" ]; then
  # shellcheck disable=SC2086
  PYTHONPATH=$here timeout 200 python3 -m pytest -q -p no:cacheprovider $TESTS 2>&1 | tail -n 3
fi
offline() {  # SIDE DTYPE TAG: one `bench offline` run with SIDE's code; stderr appended to OUT/runs.log
  local dir; dir=$(side_dir "$1")
  echo "== $3" >> "$out/runs.log"
  (cd "$dir" && TIERLM_CACHE_DIR=$here/.cache-fp8-$1 PYTHONPATH=$dir timeout "${RUN_TIMEOUT:-200}" python3 -m tierlm \
    bench offline --model builtin:qwen3-0.6b --load-format dummy --skip-tokenizer-init --kv-cache-dtype "$2" --json \
    > "$out/$3.json" 2>> "$out/runs.log") || echo "$3 failed"
}
offline A fp8 cold-A-fp8; offline B fp8 cold-B-fp8; offline A auto cold-A-auto
for round in $(seq 1 "${ROUNDS:-1}"); do
  offline A fp8 "r$round-A-fp8"; offline B fp8 "r$round-B-fp8"; offline A auto "r$round-A-auto"
done
python3 benchmarks/offline_summary.py "$out"/cold-*.json "$out"/r*.json
for dtype in fp8 auto; do
  echo "== decode steps, A, --kv-cache-dtype $dtype (context 512, then 8,192)"
  TIERLM_CACHE_DIR=$here/.cache-fp8-A timeout 150 python3 benchmarks/profile_engine.py --batches 256 --prefill-len 0 \
    --kv-cache-dtype $dtype 2>&1 | grep -A2 "^ batch"
  if [ "${LONG:-0}" = 1 ]; then
    TIERLM_CACHE_DIR=$here/.cache-fp8-A timeout 150 python3 benchmarks/profile_engine.py --batches 64 --context 8192 \
      --prefill-len 0 --kv-cache-dtype $dtype 2>&1 | grep -A2 "^ batch"
  fi
done
python3 benchmarks/decode_tunings.py "$here/.cache-fp8-A"
