#!/usr/bin/env bash
# Start-up on a fresh cache root, the tuners' kernel variants built on a pool of threads (TIERLM_COMPILE_THREADS
# unset: the usable CPUs, at most 16) against one at a time (=1): per mode, Qwen3-0.6B's batch-1 TPOT run (`bench
# offline`, one request, 128 in / 512 out, dummy weights) on a root of its own; its start-up seconds (engine
# construction, which tunes and captures) and TPOT; the GPU tests of the pool; what each root's tuners chose; a
# table last. MODES (default "pool serial") picks the order. About 4 minutes.
# Usage: [MODES=...] bash benchmarks/gpu_cold_start.sh [OUTDIR]
set -uo pipefail
source "$(dirname "$0")/ab_helpers.sh"  # ab_dirs, b1_tpot, print_versions
ab_dirs . "${1:-cold-start}"
rm -f "$out/walls.txt"  # appended to by every run below
print_versions
PYTHONPATH=$here timeout 120 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_prebuild.py \
  > "$out/tests.txt" 2>&1; tail -n 1 "$out/tests.txt"
modes=${MODES:-pool serial}
for mode in $modes; do
  root=$here/.cache-cold-$mode
  rm -rf "$root"
  threads=""
  [ "$mode" = serial ] && threads=1
  t0=$SECONDS
  B1_TIMEOUT=200 b1_tpot "$here" "$out/$mode" TIERLM_CACHE_DIR="$root" TIERLM_COMPILE_THREADS="$threads"
  echo "$mode wall $((SECONDS - t0)) s" >> "$out/walls.txt"
  python3 benchmarks/show_tuned.py "$root" > "$out/tuned-$mode.txt" 2>&1
done
for mode in $modes; do
  python3 - "$out/$mode.json" "$mode" <<'PY' || echo "$mode: no result"
import json, sys
d = json.load(open(sys.argv[1]))
t = d["tierlm"]["tpot_s"]["p50"] * 1e3
print(f"{sys.argv[2]:>7}: start-up {d['startup']['construct_s']:.1f} s, new kernels "
      f"{d['engine_info'].get('new_kernels')}, b1 TPOT p50 {t:.3f} ms")
PY
done
cat "$out/walls.txt"
if [ -f "$out/tuned-pool.txt" ] && [ -f "$out/tuned-serial.txt" ]; then
  diff <(grep -v '^==' "$out/tuned-pool.txt" | sort) <(grep -v '^==' "$out/tuned-serial.txt" | sort) \
    > "$out/tuned-diff.txt" && echo "tuned launches: the same in both roots" \
    || echo "tuned launches differ: $(grep -c '^<' "$out/tuned-diff.txt") results (tuned-diff.txt)"
fi
