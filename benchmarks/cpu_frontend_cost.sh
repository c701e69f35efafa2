#!/usr/bin/env bash
# What the HTTP frontend costs per streamed token, on the CPU: a tiny random model behind `tierlm serve`, loaded by
# `tierlm bench serve` (Poisson arrivals, streaming) at each rate; per rate the latency summary and the CPU time
# the server's frontend process (uvicorn, the engine client) spent per output token, from /proc. The engine runs
# in a process of its own and is not counted. Prints which event loop and HTTP parser uvicorn picks here (uvloop
# and httptools when installed, else asyncio and h11), so two runs can compare them.
# Run from the repository root: bash benchmarks/cpu_frontend_cost.sh [RATES ["40 80"]]
# Environment: N [400] requests per rate, IN_LEN [64], OUT_LEN [64].
set -uo pipefail
rates=${1:-"40 80"}
N=${N:-400}; IN_LEN=${IN_LEN:-64}; OUT_LEN=${OUT_LEN:-64}
work=$(mktemp -d)
server_pid=""
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
export PYTHONPATH=$PWD
python3 -m tierlm make-tiny-model "$work/model" > /dev/null || exit 2
source "$(dirname "$0")/serve_helpers.sh"  # free_port, wait_ready
python3 - <<'PY'
import importlib.util as u
loop = "uvloop" if u.find_spec("uvloop") else "asyncio"
http = "httptools" if u.find_spec("httptools") else "h11"
print(f"uvicorn here: loop {loop}, http {http}")
PY
cpu_s() {  # PID: user + system CPU seconds of that process (its threads included)
  python3 -c 'import os, sys; f = open(f"/proc/{sys.argv[1]}/stat").read().rsplit(")", 1)[1].split(); print(
    (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK"))' "$1"
}
echo "req/s  out tok/s  TTFT p50/p99 ms  TPOT p50/p99 ms  frontend CPU us/token"
for rate in $rates; do
  port=$(free_port)
  python3 -m tierlm serve --model "$work/model" --device cpu --dtype float32 --skip-tokenizer-init --port "$port" \
    > "$work/server-$rate.log" 2>&1 &
  server_pid=$!
  wait_ready "http://127.0.0.1:$port/health" "$server_pid" 120 || { echo "server did not start"; exit 1; }
  before=$(cpu_s "$server_pid")
  python3 -m tierlm bench serve --base-url "http://127.0.0.1:$port" --num-prompts "$N" --random-input-len "$IN_LEN" \
    --random-output-len "$OUT_LEN" --random-vocab-size 200 --request-rate "$rate" --seed 0 --json "$work/$rate.json" \
    --disable-tqdm > /dev/null 2>&1 || echo "bench serve failed at $rate req/s"
  after=$(cpu_s "$server_pid")
  kill "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null; server_pid=""
  python3 - "$work/$rate.json" "$rate" "$before" "$after" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))["summary"]
us = (float(sys.argv[4]) - float(sys.argv[3])) / max(1, s["total_output_tokens"]) * 1e6
print(f"{sys.argv[2]:>5}{s['output_tok_per_s']:>11.0f}{s['ttft_ms']['p50']:>9.1f}/{s['ttft_ms']['p99']:<8.1f}"
      f"{s['tpot_ms']['p50']:>8.2f}/{s['tpot_ms']['p99']:<8.2f}{us:>12.1f}")
PY
done
