#!/usr/bin/env bash
# Decode latency through the HTTP server against the engine alone, at a few concurrencies: for each C,
# `tierlm bench offline` with C requests (the engine in-process, every request at t=0), then one `tierlm serve`
# (started here, stopped by its PID) answering `tierlm bench serve --max-concurrency C` (3C requests, all queued at
# once), and at C=1 two clients that are not ours (benchmarks/sse_client.py: the standard library's http.client,
# then curl). Same model, flags, lengths and context limit on both sides. A table of TPOT p50 / p99, output
# tok/s and the frontend process's CPU per streamed token (and cores busy over the run) last.
# Usage: bash benchmarks/gpu_serve_concurrency.sh [OUTDIR]
# Environment (defaults in brackets): MODEL [builtin:qwen3-0.6b], CONCURRENCY ["1 4 16 64"], IN_LEN [128],
# OUT_LEN [512], ENGINE_FLAGS [""] (both sides, e.g. "--device cpu" with a tiny model for a smoke run),
# VOCAB [10000] (prompt ids are drawn below it).
set -uo pipefail
source "$(dirname "$0")/ab_helpers.sh"  # gpu_start
source "$(dirname "$0")/serve_helpers.sh"  # free_port, wait_ready
out=${1:-serve-concurrency}
if python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2> /dev/null; then
  gpu_start "$out"
else
  mkdir -p "$out"; out=$(cd "$out" && pwd); here=$PWD; export PYTHONPATH=$here PYTHONUNBUFFERED=1
fi
export TIERLM_CACHE_DIR=${TIERLM_CACHE_DIR:-$here/.cache-serve}
MODEL=${MODEL:-builtin:qwen3-0.6b}; IN_LEN=${IN_LEN:-128}; OUT_LEN=${OUT_LEN:-512}; VOCAB=${VOCAB:-10000}
CONCURRENCY=${CONCURRENCY:-"1 4 16 64"}
read -r -a engine_flags <<< "${ENGINE_FLAGS:-}"
common=(--model "$MODEL" --load-format dummy --skip-tokenizer-init --max-model-len $((IN_LEN + OUT_LEN + 64))
        "${engine_flags[@]}")

server_pid=""
stop_server() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2> /dev/null; wait "$server_pid" 2> /dev/null; server_pid=""; fi
}
trap stop_server EXIT

stamp "engine alone: a first run at the largest concurrency fills the cache root, not counted"
widest=$(printf '%s\n' $CONCURRENCY | sort -n | tail -n 1)
timeout 600 python3 -m tierlm bench offline "${common[@]}" --num-requests "$widest" --input-len "$IN_LEN" "$IN_LEN" \
  --output-len 16 16 --json > "$out/warm.json" 2> "$out/warm.err" \
  || { echo "warm-up failed:"; tail -n 5 "$out/warm.err"; }
for c in $CONCURRENCY; do
  timeout 300 python3 -m tierlm bench offline "${common[@]}" --num-requests "$c" --input-len "$IN_LEN" "$IN_LEN" \
    --output-len "$OUT_LEN" "$OUT_LEN" --json > "$out/offline-$c.json" 2> "$out/offline-$c.err" \
    || { echo "offline C=$c failed:"; tail -n 3 "$out/offline-$c.err"; }
done

stamp "the server"
port=$(free_port)
python3 -m tierlm serve "${common[@]}" --port "$port" > "$out/server.log" 2>&1 &
server_pid=$!
if ! wait_ready "http://127.0.0.1:$port/health" "$server_pid" 600; then
  echo "server did not start:"; tail -n 5 "$out/server.log"; exit 1
fi
url=http://127.0.0.1:$port
cpu_s() {  # the server's frontend process's CPU seconds so far (user + system; the engine is a child process)
  python3 -c "import os, sys; f = open(f'/proc/{sys.argv[1]}/stat').read().rsplit(')', 1)[1].split(); \
print((int(f[11]) + int(f[12])) / os.sysconf('SC_CLK_TCK'))" "$server_pid"
}
for c in $CONCURRENCY; do
  before=$(cpu_s)
  timeout 300 python3 -m tierlm bench serve --base-url "$url" --num-prompts $((3 * c)) --max-concurrency "$c" \
    --random-input-len "$IN_LEN" --random-output-len "$OUT_LEN" --random-vocab-size "$VOCAB" --disable-tqdm \
    --json "$out/serve-$c.json" > "$out/serve-$c.txt" 2>&1 \
    || { echo "bench serve C=$c failed:"; tail -n 3 "$out/serve-$c.txt"; }
  python3 -c "print(float('$(cpu_s)') - float('$before'))" > "$out/frontend-cpu-$c.txt"
done
for client in stdlib curl; do
  timeout 300 python3 benchmarks/sse_client.py --base-url "$url" --client "$client" --num-prompts 5 \
    --input-len "$IN_LEN" --output-len "$OUT_LEN" --vocab-size "$VOCAB" > "$out/client-$client.txt" 2>&1 \
    || echo "sse_client --client $client failed: $(tail -n 1 "$out/client-$client.txt")"
done
stop_server

echo
python3 - "$out" $CONCURRENCY <<'PY'
import json, os, sys
out, levels = sys.argv[1], sys.argv[2:]
def load(name):
    path = os.path.join(out, name)
    return json.load(open(path)) if os.path.exists(path) else None
def load_text(name):
    path = os.path.join(out, name)
    return open(path).read().strip() if os.path.exists(path) else None
print(f"{'C':>4}  {'engine alone: TPOT p50 ms':>26}{'out tok/s':>11}  {'HTTP: TPOT p50 / p99 ms':>24}{'out tok/s':>11}"
      f"  {'HTTP / alone (TPOT p50)':>24}  {'frontend CPU: us/token, cores':>30}")
for c in levels:
    alone, served = load(f"offline-{c}.json"), load(f"serve-{c}.json")
    a = f"{alone['tierlm']['tpot_s']['p50'] * 1e3:26.3f}{alone['tierlm']['output_tok_per_s']:11.0f}" if alone \
        else f"{'(none)':>37}"
    s = served["summary"] if served else None
    h = f"{s['tpot_ms']['p50']:15.3f} / {s['tpot_ms']['p99']:6.3f}{s['output_tok_per_s']:11.0f}" if s \
        else f"{'(none)':>35}"
    r = (f"{s['tpot_ms']['p50'] / (alone['tierlm']['tpot_s']['p50'] * 1e3):24.3f}" if alone and s else "")
    cpu = load_text(f"frontend-cpu-{c}.txt")
    f = (f"{float(cpu) * 1e6 / s['total_output_tokens']:22.1f}, {float(cpu) / s['duration_s']:5.2f}" if cpu and s
         else "")
    print(f"{c:>4}  {a}  {h}  {r:>24}  {f}")
PY
for client in stdlib curl; do cat "$out/client-$client.txt" 2> /dev/null; done
for c in $CONCURRENCY; do  # the in-process runs: kernels compiled inside a timed run show here
  python3 benchmarks/offline_summary.py "$out/offline-$c.json"
done
