#!/usr/bin/env bash
# The serving path of two commits, A against B, on the CPU: a tiny random model behind `tierlm serve`, loaded by
# `tierlm bench serve` (Poisson arrivals) at each rate, A and B alternating. It measures what the HTTP server and
# its engine loop add per request and per step (the model's own compute is a few ms per step), not a GPU figure.
# Run from the repository root: bash benchmarks/cpu_serve_ab.sh REV_A REV_B [RATES ["20 40"]]
# Environment: N [200] requests per run, IN_LEN [64], OUT_LEN [32].
set -uo pipefail
a=${1:?first revision}; b=${2:?second revision}; rates=${3:-"20 40"}
N=${N:-200}; IN_LEN=${IN_LEN:-64}; OUT_LEN=${OUT_LEN:-32}
work=$(mktemp -d)
cleanup() { for t in "$work"/tree-*; do git worktree remove --force "$t" 2>/dev/null; done; rm -rf "$work"; }
trap cleanup EXIT
for rev in "$a" "$b"; do git worktree add -q --detach "$work/tree-$rev" "$rev" || exit 2; done
python3 -m tierlm make-tiny-model "$work/model" > /dev/null || exit 2
source "$(dirname "$0")/serve_helpers.sh"  # free_port, wait_ready
run() {  # REV RATE
  local tree=$work/tree-$1 port; port=$(free_port)
  (cd "$tree" && PYTHONPATH=$tree exec python3 -m tierlm serve --model "$work/model" --device cpu --dtype float32 \
    --skip-tokenizer-init --port "$port" > "$work/$1-$2.log" 2>&1) &
  local pid=$!
  wait_ready "http://127.0.0.1:$port/health" "$pid" 120 \
    || { echo "server of $1 did not start"; kill "$pid" 2>/dev/null; return; }
  (cd "$tree" && PYTHONPATH=$tree python3 -m tierlm bench serve --base-url "http://127.0.0.1:$port" --num-prompts "$N" \
    --random-input-len "$IN_LEN" --random-output-len "$OUT_LEN" --random-vocab-size 200 --request-rate "$2" --seed 0 \
    --json "$work/$1-$2.json" --disable-tqdm > /dev/null 2>&1) || echo "bench serve failed for $1 at $2 req/s"
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  python3 - "$work/$1-$2.json" "$1" "$2" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))["summary"]
print(f"{sys.argv[2]:<12}{sys.argv[3]:>6}{s['output_tok_per_s']:>11.0f}"
      f"{s['ttft_ms']['p50']:>9.1f}/{s['ttft_ms']['p99']:<8.1f}"
      f"{s['tpot_ms']['p50']:>9.2f}/{s['tpot_ms']['p99']:<8.2f}")
PY
}
echo "rev          req/s  out tok/s  TTFT p50/p99 ms  TPOT p50/p99 ms"
for rate in $rates; do run "$a" "$rate"; run "$b" "$rate"; done
