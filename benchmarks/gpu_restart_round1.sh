#!/usr/bin/env bash
# Round 1 of a restart on a warm L3 against GPU only, variant by variant, on one H200 (the Llama-3.1-8B shape
# of gpu_multiturn_tiers.sh, ratio 1.5): where does a tier engine lose its milliseconds when nothing is
# loaded? One l3 run of ROUNDS_WARM rounds fills the file store; then every variant serves round 1 only,
# REPEATS times, alternated. Prints the median TTFT of each wave's first and second prefill chunk and the mean.
# Variants (VARIANTS, default all): gpu, l2, restart, restart-nolookup (--hicache-prefetch-threshold
# beyond any prompt: the store is never asked), restart-switch5ms (the interpreter's default thread switch
# interval kept beside the tier I/O threads).
# Usage: bash benchmarks/gpu_restart_round1.sh [OUTDIR]
set -uo pipefail
out=${1:-restart-round1}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
work=$(mktemp -d "${TMPDIR:-/tmp}/tierlm-r1.XXXXXX")
trap 'rm -rf "$work"' EXIT
export TIERLM_CACHE_DIR=${TIERLM_CACHE_DIR:-$work/cache}
common=(--model "${MODEL:-builtin:llama-3.1-8b}" --load-format dummy --num-clients "${CLIENTS:-40}"
        --first-turn-len 2048 --turn-len 256 --answer-len 64 --concurrency 8 --kv-cache-gb "${KV_GB:-3.5}"
        --hicache-ratio 1.5 --kv-store-max-gb 24 --json)
bench() {  # NAME PYTHON-PRELUDE ARGS...
  local name=$1 prelude=$2; shift 2
  local t0=$SECONDS
  python3 -c "import runpy, sys; $prelude; sys.argv = ['tierlm'] + sys.argv[1:]; runpy.run_module('tierlm',
      run_name='__main__')" \
    bench multiturn "${common[@]}" --output-dir "$out/$name" "$@" >"$out/$name.json" 2>"$out/$name.err"
  echo "$name: exit $?, $((SECONDS - t0)) s"
}
store="file://$work/l3"
bench warm "pass" --modes l3 --num-rounds "${ROUNDS_WARM:-2}" --kv-store "$store"
for rep in $(seq 1 "${REPEATS:-2}"); do
  for v in ${VARIANTS:-gpu l2 restart restart-nolookup restart-switch5ms}; do
    case $v in
      gpu) bench "$v-$rep" "pass" --modes gpu --num-rounds 1 ;;
      l2) bench "$v-$rep" "pass" --modes l2 --num-rounds 1 ;;
      restart) bench "$v-$rep" "pass" --modes l3 --num-rounds 1 --kv-store "$store" ;;
      restart-nolookup) bench "$v-$rep" "pass" --modes l3 --num-rounds 1 --kv-store "$store" \
        --hicache-prefetch-threshold 1000000 ;;
      restart-switch5ms) bench "$v-$rep" "import tierlm.kvcache.tier_io as t; t.IO_SWITCH_INTERVAL_S = 0.005" \
        --modes l3 --num-rounds 1 --kv-store "$store" ;;
    esac
  done
done
python3 - "$out" <<'PY'
import glob, json, os, statistics as st, sys
out = sys.argv[1]
pooled = {}
for path in sorted(glob.glob(os.path.join(out, "*-[0-9]*.json"))):
    name = os.path.basename(path)[:-5].rsplit("-", 1)[0]
    try:
        r = json.load(open(path))["results"][0]
    except Exception:
        print(f"{name}: no results"); continue
    v = r["rounds"][0]["ttft_values_s"]
    pooled.setdefault(name, []).extend(v)
base = None
print(f"{'variant':<20} {'n':>3} {'chunk 1 ms':>10} {'chunk 2 ms':>10} {'mean ms':>8}  vs gpu (1 / 2 / mean)")
for name, v in pooled.items():
    v = sorted(v); cut = (v[0] + v[-1]) / 2
    lo, hi = [x for x in v if x < cut], [x for x in v if x >= cut]
    row = (st.median(lo) * 1e3, st.median(hi) * 1e3, st.mean(v) * 1e3)
    base = base or (row if name == "gpu" else None)
    rel = " / ".join(f"{a / b:.3f}" for a, b in zip(row, base)) if base else "-"
    print(f"{name:<20} {len(v):>3} {row[0]:>10.1f} {row[1]:>10.1f} {row[2]:>8.1f}  {rel}")
PY
