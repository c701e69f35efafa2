#!/usr/bin/env bash
# Multi-turn TTFT per round on one H200 (Llama-3.1-8B shape, dummy weights) with the working set over 4x the
# device pool: GPU only, +L2 and +L2+L3 (file store) at --hicache-ratio 5 (L2 holds everything) and 1.5 (L3
# must serve), then a restart on the warm L3 of the 1.5 run (round 1 is served from L3 or recomputed).
# Ends with one table: TTFT p50 per round per mode, the L3 mode against the better of GPU only and +L2, and
# what the load-or-recompute policy did with the lower tiers' hits. Meant to take 5-8 minutes on an H200.
# Usage: bash benchmarks/gpu_multiturn_tiers.sh [OUTDIR]
# Environment: REPEATS (default 1: runs of the tier modes on fresh engines and stores, the L3 mode first on
# every other one; GPU only runs once; the TTFT p50 pools their requests),
# RESTARTS (default 1: restarts on the warm store, pooled the same way),
# LOAD_POLICY (--hicache-load-policy, default auto), MODEL, EXTRA (more engine flags), STORE_IO (0:
# skip the file store's check against the raw disk, bench_store_io.py, which runs last), and the
# workload: CLIENTS ROUNDS FIRST TURN ANSWER RANGE (--random-range-ratio: spreads prompt turn and answer
# lengths) CONC KV_GB (defaults below: 40 conversations of 2,048 + 4 x 256
# prompt tokens and 5 x 64 answer tokens = 135,680 tokens (16.6 GiB) of KV, 4.7x a 3.5 GiB pool of 28,672
# tokens, which still holds the 8 requests in flight). Each file store is capped at 24 GiB of disk and the
# first one is removed before the second is written.
set -uo pipefail
out=${1:-multiturn-tiers}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
work=$(mktemp -d "${TMPDIR:-/tmp}/tierlm-mt-tiers.XXXXXX")
trap 'rm -rf "$work"' EXIT
export TIERLM_CACHE_DIR=${TIERLM_CACHE_DIR:-$work/cache}  # kernels compiled by the first engine serve the rest
policy=${LOAD_POLICY:-auto}
model=${MODEL:-builtin:llama-3.1-8b}
if [ "${SHAPE:-}" = llama-405b-4l ]; then  # Llama-3.1-405B's layer shape with 4 of its 126 layers: a prefill that
  # costs far more per KV byte than the 8B's (16,384 hidden, 53,248 MLP, 8 KV heads), so that loading wins
  # its KV is 16 KiB per token (the 8B's is 128 KiB): a 0.45 GiB pool keeps the working set over 4x the pool
  model=$work/llama-405b-4l; mkdir -p "$model"; KV_GB=${KV_GB:-0.45}
  python3 - "$model" <<'PY'
import json, sys
from tierlm.models.loader import resolve_model_dir
cfg = json.load(open(resolve_model_dir("builtin:llama-3.1-8b", need_weights=False) / "config.json"))
cfg.update(hidden_size=16384, intermediate_size=53248, num_attention_heads=128, num_hidden_layers=4)
json.dump(cfg, open(f"{sys.argv[1]}/config.json", "w"), indent=1)
PY
fi
runs=${RUNS:-"r5 r1.5 restart"}
reps=${REPEATS:-1}
common=(--model "$model" --load-format dummy --num-clients "${CLIENTS:-40}"
        --num-rounds "${ROUNDS:-5}" --first-turn-len "${FIRST:-2048}" --turn-len "${TURN:-256}"
        --answer-len "${ANSWER:-64}" --random-range-ratio "${RANGE:-0}" --concurrency "${CONC:-8}"
        --kv-cache-gb "${KV_GB:-3.5}"
        --hicache-load-policy "$policy" --kv-store-max-gb 24 --json ${EXTRA:-})

run() {  # NAME ARGS...: one `tierlm bench multiturn`, its summary in OUT/NAME.json
  local name=$1; shift
  local t0=$SECONDS
  python3 -m tierlm bench multiturn "${common[@]}" --output-dir "$out/$name" "$@" >"$out/$name.json" 2>"$out/$name.err"
  local rc=$?
  echo "$name: exit $rc, $((SECONDS - t0)) s"
  [ $rc = 0 ] || { grep -v "^INFO" "$out/$name.err" | tail -n 20; rm -f "$out/$name.json"; }
}

python3 -c "import torch; c = torch.cuda.is_available()
print('torch', torch.__version__, torch.cuda.get_device_name() if c else 'CPU')"
gpu=gpu,  # GPU only runs once, beside the first tier modes (it does not depend on the ratio)
for rep in $(seq 1 "$reps"); do  # REPEATS > 1: the tier modes again on fresh engines and stores, alternated
  tiers=l2,l3; [ $((rep % 2)) = 0 ] && tiers=l3,l2  # every other repeat runs the L3 mode first
  if [[ $runs == *r5* ]]; then
    run "r5-$rep" --modes $gpu$tiers --hicache-ratio 5 --kv-store "file://$work/l3-r5"
    rm -rf "$work/l3-r5"
    gpu=
  fi
  if [[ $runs == *r1.5* ]]; then
    rm -rf "$work/l3-r1.5"
    run "r1.5-$rep" --modes $gpu$tiers --hicache-ratio 1.5 --kv-store "file://$work/l3-r1.5"
    gpu=
  fi
done
# the same conversations again on the warm L3 of the last ratio-1.5 run (a new engine: nothing on the device
# or in host memory)
# (RESTARTS > 1: that many restarts, one after another on the same store, pooled like REPEATS)
if [[ $runs == *restart* ]]; then
  for rep in $(seq 1 "${RESTARTS:-1}"); do
    run "restart-$rep" --modes l3 --hicache-ratio 1.5 --kv-store "file://$work/l3-r1.5"
  done
fi

if [ "${STORE_IO:-1}" = 1 ]; then  # this machine's disk against the file store, on the same file system
  timeout 120 python3 benchmarks/bench_store_io.py --skip redis --gib 2 --reps 1 --dir "$work" \
    >"$out/store_io.txt" 2>"$out/store_io.err" || echo "store I/O check failed: $(tail -n 1 "$out/store_io.err")"
fi

python3 - "$out" "$policy" "$reps" "${RESTARTS:-1}" "${CONC:-8}" <<'PY'
import glob, json, os, sys

out, policy, reps, restarts, conc = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
rows, runs = {}, {}  # key -> the last run's result; key -> every run's result
for name, label in (("r5", "ratio 5"), ("r1.5", "ratio 1.5"), ("restart", "restart")):
    for rep in range(1, (restarts if name == "restart" else reps) + 1):
        path = os.path.join(out, f"{name}-{rep}.json")
        if not os.path.exists(path):
            if os.path.exists(os.path.join(out, f"{name}-{rep}.err")):  # it ran and failed (RUNS may skip it)
                print(f"{name}-{rep}: no results (see {name}-{rep}.err)")
            continue
        s = json.load(open(path))
        for r in s["results"]:
            key = "gpu" if r["mode"] == "gpu" else f"{r['mode']} {label}"
            rows[key] = r
            runs.setdefault(key, []).append(r)
            if key == "gpu" and len(runs[key]) == 1:
                ws, pool = s["working_set_tokens"], r["kv_pool_tokens"]
                print(f"working set {ws} tokens = {ws / pool:.1f}x the device pool ({pool} tokens)")

def pct(values, q):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(q * (len(v) - 1))))]

def p50(key, stat="p50"):
    """Per round: the p50 (or mean) of every request of every run of `key`, pooled."""
    rounds = zip(*[r["rounds"] for r in runs[key]])
    pooled = [sum((x.get("ttft_values_s", []) for x in rs), []) for rs in rounds]
    if stat == "mean":
        return [sum(v) / len(v) for v in pooled]
    return [pct(v, 0.5) for v in pooled]

print(f"\nload policy {policy}; per tier: thousands of tokens loaded / recomputed; the cost model's estimates "
      "(the last run of each mode)")
for key, r in rows.items():
    t = r["tiers"]
    if "cost" not in t:
        continue
    c = t["cost"]
    split = "  ".join(f"{k} {t[k].get('loaded_tokens', 0) / 1e3:.1f}/{t[k].get('recomputed_tokens', 0) / 1e3:.1f}"
                      for k in ("L2", "L3"))
    pf = t.get("prefetch", {})
    both = (f", L3 splits {pf['split']} (rejoined {pf['split_rejoined']}, dropped {pf['split_dropped']})"
            if pf.get("split") else "")
    both += f", probes {pf.get('probes', 0)}" + (f", fetched while queued {pf['hidden']}" if pf.get("hidden") else "")
    print(f"{key:<18} {split}   prefill {c['prefill_tokens_per_s']:.0f} tok/s (n={c['prefill_samples']}), "
          f"L2 {c['L2_bytes_per_s'] / 1e9:.1f} GB/s (n={c['L2_samples']}), "
          f"L3 {c['L3_bytes_per_s'] / 1e9:.2f} GB/s (n={c['L3_samples']}){both}")
    b = t.get("backups", {})
    if "eviction_order" in t["L2"]:
        print(f"{'':<18} L2 hits {t['L2']['hits']}, host eviction order {t['L2']['eviction_order']} "
              f"({t['L2']['eviction_policy']}, {t['L2']['eviction_order_flips']} flips), admissions that "
              f"waited for a backup {b.get('admission_waits', 0)}, device pages reused mid-copy "
              f"{t['L1'].get('dropped_while_copying_pages', 0)}, backed up by DMA from the pool / through "
              f"the staging {b.get('pages_direct', '-')} / {b.get('pages_staged', '-')} pages")
    if "L3" in t and "store" in t["L3"]:
        st = t["L3"]["store"]
        print(f"{'':<18} L3 wrote {st['pages_written']} pages ({st['bytes_written'] / 1e9:.1f} GB in "
              f"{st['write_seconds']:.1f} s), dropped {t['L3'].get('dropped_write_pages', 0)} at the queue bound, "
              f"{b.get('l3_on_eviction_pages', 0)} on host eviction, host tier evicted {t['L2']['evicted_pages']}")

print("\nhost ms per engine step by phase (schedule / launch / wait on the device / outputs), steps")
for key, r in rows.items():
    h = r.get("step_host")
    if h:
        ms = h["ms_per_step"]
        print(f"{key:<18} " + " / ".join(f"{ms[p]:.3f}" for p in ("schedule", "launch", "wait", "outputs"))
              + f"   total {h['total_ms_per_step']:.3f}, {h['steps']} steps")
    g = r.get("gc")
    if g:  # Python's garbage collector while the engine served (its full collections stop every thread)
        print(f"{'':<18} gc: {g['collections'][2]} full collections, {g['seconds'][2] * 1e3:.0f} ms in them, "
              f"longest pause {g['longest_s'] * 1e3:.0f} ms, {g['frozen_objects']} objects frozen")

print(f"\nTTFT p50 per round (s) over every request of {reps} run(s) per mode; 'vs best': the L3 mode / min(GPU "
      "only, +L2) per round (target <= 1.05), restart: round 1 / GPU only's round 1 (target <= 1)")
print(f"{'mode':<18}{'wall s':>8}   TTFT p50 per round")
for key in rows:
    wall = sum(r["elapsed_s"] for r in runs[key]) / len(runs[key])
    print(f"{key:<18}{wall:>8.1f}   " + " ".join(f"{x:.3f}" for x in p50(key)))
for label in ("ratio 5", "ratio 1.5"):
    l3, l2 = f"l3 {label}", f"l2 {label}"
    if l3 in rows and l2 in rows and "gpu" in rows:
        ratio = [a / min(g, b) for a, g, b in zip(p50(l3), p50("gpu"), p50(l2))]
        print(f"{'vs best ' + label:<18}{'':>8}   " + " ".join(f"{x:.2f}" for x in ratio)
              + ("   ok" if max(ratio) <= 1.05 else "   OVER"))
        # a round's prompts arrive in waves of CONC, so its p50 can fall between two waves: the means show it
        mean = [a / min(g, b) for a, g, b in zip(p50(l3, "mean"), p50("gpu", "mean"), p50(l2, "mean"))]
        print(f"{'  (means)':<18}{'':>8}   " + " ".join(f"{x:.2f}" for x in mean))
        for i, (a, b) in enumerate(zip(runs[l3], runs[l2])) if reps > 1 else ():  # against the pooled GPU only
            each = [x["ttft_s"]["p50"] / min(g, z["ttft_s"]["p50"])
                    for x, g, z in zip(a["rounds"], p50("gpu"), b["rounds"])]
            print(f"{f'  (run {i + 1})':<18}{'':>8}   " + " ".join(f"{x:.2f}" for x in each))
# round 1's prompts go in waves of CONC (a client starts when one ends): the median TTFT of each wave, pooled over
# runs, shows a cost that one wave pays (a first use) or every wave pays (a wave boundary's host work)
print(f"\nround 1 by wave: median TTFT (s) of each wave of {conc}, pooled over runs")
for key in rows:
    waves = {}
    for r in runs[key]:
        first = r["rounds"][0]
        order = [t for _, t in sorted(zip(first.get("submitted_s", []), first.get("ttft_values_s", [])))]
        for w in range(0, len(order), conc):
            waves.setdefault(w // conc, []).extend(order[w:w + conc])
    print(f"{key:<18}{'':>8}   " + " ".join(f"{pct(v, 0.5):.3f}" for _, v in sorted(waves.items())))
if "l3 restart" in rows and "gpu" in rows:
    x = p50("l3 restart")[0] / p50("gpu")[0]
    mean = p50("l3 restart", "mean")[0] / p50("gpu", "mean")[0]
    print(f"{'restart round 1':<18}{'':>8}   {x:.3f} (means {mean:.3f})" + ("   ok" if x <= 1.0 else "   OVER"))
    if restarts > 1:
        each = [r["rounds"][0]["ttft_s"]["p50"] / p50("gpu")[0] for r in runs["l3 restart"]]
        print(f"{'  (each restart)':<18}{'':>8}   " + " ".join(f"{x:.3f}" for x in each))
PY
[ -s "$out/store_io.txt" ] \
  && { echo; echo "file store against the raw disk (bench_store_io.py):"; tail -n 8 "$out/store_io.txt"; }
