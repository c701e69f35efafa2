#!/usr/bin/env bash
# Online serving on one GPU, per model: the offline capacity (`tierlm bench offline`, requests/s with every
# request at t=0), then `tierlm bench serve` (Poisson arrivals) at about 50%, 80% and 100% of it, against a
# server with mixed steps off and one with them on (each started here in the background and stopped by its
# PID). The same prompts (seeded) go to both servers. Prints one table last, with the ratios mixed / off at
# 80% load that the acceptance of mixed steps reads (TPOT p50 and p99 <= 0.75x, TTFT p99 and output tok/s
# no worse), and writes every summary to OUTDIR/summary.json (per-run JSON, PNG and logs beside it).
#
# Run from the repository root: bash benchmarks/gpu_bench_serve.sh [OUTDIR]
# `tierlm serve` needs fastapi, starlette, pydantic, uvicorn and pyzmq (with their dependencies) and the
# client needs aiohttp; the script checks them first.
# Environment (defaults in brackets): MODELS ["builtin:qwen3-0.6b builtin:llama-3.1-8b"], IN_LEN [1024],
# OUT_LEN [256], NOFF [256] offline requests, RUN_S [12] seconds of arrivals per serve run, LOADS
# ["0.5 0.8 1.0"], MIXED_FLAGS ["--enable-mixed-chunk"], MIXED_BUDGETS [""] (more servers with mixed steps,
# one per --max-mixed-tokens value given, e.g. "1024 4096", named onN in the table), PIECES_BUDGETS [""] (the
# same with --no-mixed-cuda-graph: mixed steps replay the piecewise graphs, attention launched eagerly; named pN),
# VARIANTS [""] (more servers with mixed steps and flags of their own: "NAME=FLAGS;NAME=FLAGS", e.g.
# "k2=--mixed-backlog-steps 2;k0=--mixed-backlog-steps 0"; flags after "off:" run without MIXED_FLAGS, e.g.
# "eager=off:--piecewise-cuda-graph-max-tokens 0"),
# ENGINE_FLAGS [""] (flags for both benchmarks and servers, e.g. "--device cpu" for a smoke run),
# SERVE_FLAGS [""] (more `tierlm bench serve` flags, e.g. "--random-vocab-size 500" for a tiny model),
# CAPACITY [""] (requests/s per model name, e.g. "qwen3-0.6b=54.18 llama-3.1-8b=22.31": skips measuring it),
# REPEATS [1] (runs per load and server, each on prompts and arrival times of its own seed, the same for every
# server; the table pools their requests, so its p99 rests on REPEATS times as many requests).
set -uo pipefail
out=${1:-serve-out}
mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
export TIERLM_CACHE_DIR=${TIERLM_CACHE_DIR:-$PWD/.cache-bench}  # compiled kernels and tunings, kept across runs
MODELS=${MODELS:-"builtin:qwen3-0.6b builtin:llama-3.1-8b"}
IN_LEN=${IN_LEN:-1024}; OUT_LEN=${OUT_LEN:-256}; NOFF=${NOFF:-256}; RUN_S=${RUN_S:-12}; REPEATS=${REPEATS:-1}
LOADS=${LOADS:-"0.5 0.8 1.0"}; MIXED_FLAGS=${MIXED_FLAGS:-"--enable-mixed-chunk"}; ENGINE_FLAGS=${ENGINE_FLAGS:-}
read -r -a engine_flags <<< "$ENGINE_FLAGS"
read -r -a serve_flags <<< "${SERVE_FLAGS:-}"
read -r -a mixed_flags <<< "$MIXED_FLAGS"
declare -A variants=()
IFS=';' read -r -a variant_specs <<< "${VARIANTS:-}"
for spec in "${variant_specs[@]}"; do [ -n "$spec" ] && variants[${spec%%=*}]=${spec#*=}; done
variant_names=$(for spec in "${variant_specs[@]}"; do [ -n "$spec" ] && echo "${spec%%=*}"; done)

missing=$(python3 - <<'PY'
import importlib.util as u
print(" ".join(m for m in ("fastapi", "starlette", "pydantic", "uvicorn", "zmq", "aiohttp", "tqdm")
               if u.find_spec(m) is None))
PY
)
if [ -n "$missing" ]; then echo "missing Python packages: $missing (carry them as wheels)"; exit 2; fi

server_pid=""
stop_server() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null; server_pid=""; fi
}
trap stop_server EXIT

source "$(dirname "$0")/serve_helpers.sh"  # free_port, wait_ready

for model in $MODELS; do
  name=$(basename "${model#builtin:}")
  common=(--model "$model" --load-format dummy --skip-tokenizer-init --max-model-len $((IN_LEN + OUT_LEN + 64))
          "${engine_flags[@]}")
  t0=$SECONDS
  capacity=$(python3 -c 'import sys; print(dict(kv.split("=") for kv in sys.argv[2].split()).get(sys.argv[1], ""))' \
             "$name" "${CAPACITY:-}")
  if [ -n "$capacity" ]; then
    echo "== $model: offline capacity $capacity req/s (given in CAPACITY)"
  else
    echo "== $model: offline capacity ($NOFF requests, $IN_LEN in / $OUT_LEN out)"
    if ! python3 -m tierlm bench offline "${common[@]}" --num-requests "$NOFF" --input-len "$IN_LEN" "$IN_LEN" \
        --output-len "$OUT_LEN" "$OUT_LEN" --temperature 0 --json > "$out/$name-offline.json" \
        2> "$out/$name-offline.err"; then
      echo "offline benchmark failed:"; tail -n 5 "$out/$name-offline.err"; continue
    fi
    capacity=$(python3 -c 'import json, sys; t = json.load(open(sys.argv[1]))["tierlm"]; print(round(int(sys.argv[2]) /
        t["elapsed_s"], 3))' \
               "$out/$name-offline.json" "$NOFF")
    echo "   capacity $capacity req/s"
  fi
  for mode in off on $(for b in ${MIXED_BUDGETS:-}; do echo "on$b"; done) \
              $(for b in ${PIECES_BUDGETS:-}; do echo "p$b"; done) $variant_names; do
    flags=()
    if [ -n "${variants[$mode]+set}" ]; then
      spec=${variants[$mode]}; mode_case=variant
      if [ "${spec#off:}" != "$spec" ]; then spec=${spec#off:}; mode_case=plain; fi  # mixed steps off
      read -r -a extra <<< "$spec"
    else mode_case=$mode; fi
    case $mode_case in
      variant) flags=("${mixed_flags[@]}" "${extra[@]}") ;;
      plain) flags=("${extra[@]}") ;;
      on) flags=("${mixed_flags[@]}") ;;
      p*) flags=("${mixed_flags[@]}" --no-mixed-cuda-graph --max-mixed-tokens "${mode#p}") ;;
      on*) flags=("${mixed_flags[@]}" --max-mixed-tokens "${mode#on}") ;;
    esac
    port=$(free_port)
    python3 -m tierlm serve "${common[@]}" "${flags[@]}" --port "$port" > "$out/$name-$mode-server.log" 2>&1 &
    server_pid=$!
    if ! wait_ready "http://127.0.0.1:$port/health" "$server_pid" 600; then
      echo "server ($mode) did not start:"; tail -n 5 "$out/$name-$mode-server.log"; stop_server; continue
    fi
    for load in $LOADS; do
      rate=$(python3 -c "print(round($capacity * $load, 3))")
      n=$(python3 -c "import math; print(max(32, math.ceil($rate * $RUN_S)))")
      for rep in $(seq 1 "$REPEATS"); do
        tag=$name-$mode-$load$([ "$REPEATS" -gt 1 ] && echo "-r$rep")
        echo \
          "   mixed $mode, load $load: $rate req/s, $n requests$([ "$REPEATS" -gt 1 ] && echo ", run $rep of $REPEATS")"
        python3 -m tierlm bench serve --base-url "http://127.0.0.1:$port" --num-prompts "$n" \
          --random-input-len "$IN_LEN" --random-output-len "$OUT_LEN" --request-rate "$rate" --seed $((rep - 1)) \
          --label "$name mixed=$mode load=$load" --json "$out/$tag.json" \
          --plot "$out/$tag.png" --disable-tqdm "${serve_flags[@]}" > "$out/$tag.txt" 2>&1 \
          || { echo "   bench serve failed:"; tail -n 3 "$out/$tag.txt"; }
      done
    done
    python3 -c 'import sys, urllib.request; open(sys.argv[2], "wb").write(urllib.request.urlopen(
        f"http://127.0.0.1:{sys.argv[1]}/stats", timeout=10).read())' "$port" "$out/$name-$mode-stats.json" \
      || echo "   (no /stats)"
    stop_server
  done
  echo "   $model took $((SECONDS - t0)) s"
done

python3 - "$out" "$MODELS" "$LOADS" "$REPEATS" "${MIXED_BUDGETS:-}" "${PIECES_BUDGETS:-}" $variant_names <<'PY'
import json, os, sys
import numpy as np
out, models, loads, repeats = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), int(sys.argv[4])
modes = (["off", "on"] + [f"on{b}" for b in sys.argv[5].split()] + [f"p{b}" for b in sys.argv[6].split()]
         + sys.argv[7:])
def load(path):
    return json.load(open(path)) if os.path.exists(path) else None
def pooled(runs):
    """The runs' requests together: latency percentiles over all of them, throughput the mean of the runs."""
    rows = [r for run in runs for r in run["requests"] if r["ok"]]
    pct = lambda key, q: float(np.percentile([r[key] for r in rows if r[key] is not None], q))
    mean = lambda f: sum(f(run["summary"]) for run in runs) / len(runs)
    return {"runs": len(runs), "requests": len(rows), "failed": sum(run["summary"]["failed"] for run in runs),
            "output_tok_per_s": mean(lambda s: s["output_tok_per_s"]), "itl_p99": mean(lambda s: s["itl_ms"]["p99"]),
            "ttft_ms": {"p50": pct("ttft_ms", 50), "p99": pct("ttft_ms", 99)},
            "tpot_ms": {"p50": pct("tpot_ms", 50), "p99": pct("tpot_ms", 99)},
            "ttft_p99_runs": [run["summary"]["ttft_ms"]["p99"] for run in runs]}
everything = {}
print(f"\n{'model':<14}{'mixed':>6}{'load':>6}{'req/s':>8}{'reqs':>6}{'out tok/s':>11}{'TTFT p50/p99 ms':>18}"
      f"{'TPOT p50/p99 ms':>18}{'ITL p99 ms':>12}{'failed':>8}")
for model in models:
    name = os.path.basename(model.replace("builtin:", ""))
    stats = {}
    for mode in modes:
        for ld in loads:
            tags = [f"{name}-{mode}-{ld}"] if repeats == 1 else [f"{name}-{mode}-{ld}-r{i}"
                                                                 for i in range(1, repeats + 1)]
            runs = [r for r in (load(f"{out}/{t}.json") for t in tags) if r is not None]
            if not runs:
                print(f"{name:<14}{mode:>6}{ld:>6}   (no result)")
                continue
            for t, r in zip(tags, runs):
                everything[t] = {"config": r["config"], "summary": r["summary"]}
            s = stats[(mode, ld)] = pooled(runs)
            everything[f"{name}-{mode}-{ld}-pooled"] = s
            print(f"{name:<14}{mode:>6}{ld:>6}{runs[0]['config']['request_rate']:>8.2f}{s['requests']:>6}"
                  f"{s['output_tok_per_s']:>11.0f}{s['ttft_ms']['p50']:>9.1f}/{s['ttft_ms']['p99']:<8.1f}"
                  f"{s['tpot_ms']['p50']:>9.2f}/{s['tpot_ms']['p99']:<8.2f}{s['itl_p99']:>12.2f}{s['failed']:>8}")
    for mode in modes[1:]:
        off, on = stats.get(("off", "0.8")), stats.get((mode, "0.8"))
        if not (off and on):
            continue
        ratio = lambda k, q: on[k][q] / off[k][q]
        checks = {"TPOT p50": ratio("tpot_ms", "p50") <= 0.75, "TPOT p99": ratio("tpot_ms", "p99") <= 0.75,
                  "TTFT p99": ratio("ttft_ms", "p99") <= 1.0,
                  "out tok/s": on["output_tok_per_s"] >= off["output_tok_per_s"]}
        per_run = ""
        if len(on["ttft_p99_runs"]) > 1 and len(on["ttft_p99_runs"]) == len(off["ttft_p99_runs"]):
            per_run = " (TTFT p99 per run: " + ", ".join(
                f"{a / b:.2f}x" for a, b in zip(on["ttft_p99_runs"], off["ttft_p99_runs"])) + ")"
        print(f"{name} at 80% load, mixed ({mode})/off: TPOT p50 {ratio('tpot_ms', 'p50'):.2f}x, p99 "
              f"{ratio('tpot_ms', 'p99'):.2f}x, TTFT p99 {ratio('ttft_ms', 'p99'):.2f}x{per_run}, out tok/s "
              f"{on['output_tok_per_s'] / off['output_tok_per_s']:.2f}x; "
              + ", ".join(f"{k} {'ok' if v else 'NOT MET'}" for k, v in checks.items()))
    offline = load(f"{out}/{name}-offline.json")
    if offline:
        everything[f"{name}-offline"] = offline["tierlm"]
json.dump(everything, open(f"{out}/summary.json", "w"), indent=1)  # every figure in one file
print(f"all summaries: {out}/summary.json")
PY
