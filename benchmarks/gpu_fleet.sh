#!/usr/bin/env bash
# Two `tierlm serve` replicas (one per GPU) behind SGLang's router, multi-turn conversations through the router
# (benchmarks/fleet_multiturn.py): does a shared Redis L3 pay across replicas? Modes, each on fresh replicas
# and with the same conversations (same seed):
#   aware-shared   router --policy cache_aware, both replicas on one Redis L3 (the recipe of docs/fleet.md)
#   aware-private  cache_aware, each replica its own file L3
#   rr-shared      router --policy round_robin, shared Redis L3: a conversation's turns land on either
#                  replica, so the other replica's prefix comes from L3 or is recomputed
#   rr-private     round_robin, private file L3s (what rr-shared saves)
# "Private" is a file store per replica rather than no L3 at all: both modes then run the same tiers and do the
# same write-through work, so the difference is the sharing alone.
# Prints one table last (TTFT p50 per round, req/s, output tok/s, cached-token share, L3 hit tokens) and
# writes OUTDIR/summary.json; each mode's client report, replica /stats and logs are in OUTDIR too.
# Targets < 9 minutes on 2 H200s with the default workload; a mode that would start with less than 120 s of
# BUDGET_S left is skipped, and every step has a time limit, so the table always comes.
#
# Run from the repository root: bash benchmarks/gpu_fleet.sh [OUTDIR]
# Needs redis-server (PATH or REDIS_SERVER), sglang-router (`python -m sglang_router.launch_router`), and the
# Python packages of `tierlm serve`, redis and aiohttp. Environment (defaults in brackets):
# MODEL [builtin:llama-3.1-8b], loaded with --load-format dummy; a builtin config has no tokenizer, so one is
#   written (the tiny models' byte-level BPE with the vocabulary padded to the model's) unless TOKENIZER names one
# GPUS ["0 1"]: CUDA_VISIBLE_DEVICES of replica a and b (empty: not set, e.g. for a CPU smoke run)
# ENGINE_FLAGS ["--kv-cache-gb 16": with the default pools, two replicas' host tiers asked for more pinned memory
#   than a 256 GiB host has]: `tierlm serve` flags, e.g. "--device cpu --dtype float32 --kv-cache-gb 0.01 --page-size 4"
# PREFETCH_FLAGS ["--hicache-prefetch-policy wait_complete --hicache-prefetch-threshold 64"] (as docs/fleet.md)
# CLIENT_FLAGS [""]: more fleet_multiturn.py flags (its defaults: 32 conversations x 4 rounds, 2000 + 200 words,
#   64-token answers, 8 in flight)
# MODES ["aware-shared aware-private rr-shared rr-private"], SEED [0], BUDGET_S [510]
set -uo pipefail
out=${1:-fleet-out}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
work=$(mktemp -d "${TMPDIR:-/tmp}/tierlm-fleet.XXXXXX")
export TIERLM_CACHE_DIR=${TIERLM_CACHE_DIR:-$work/cache}  # kernels compiled by the first replica serve the rest
model=${MODEL:-builtin:llama-3.1-8b}
read -r -a gpus <<< "${GPUS-0 1}"
read -r -a engine_flags <<< "${ENGINE_FLAGS---kv-cache-gb 16}"
read -r -a client_flags <<< "${CLIENT_FLAGS:-}"
read -r -a prefetch_flags \
  <<< "${PREFETCH_FLAGS:---hicache-prefetch-policy wait_complete --hicache-prefetch-threshold 64}"
modes=${MODES:-"aware-shared aware-private rr-shared rr-private"}
seed=${SEED:-0}
deadline=$((SECONDS + ${BUDGET_S:-510}))
redis_bin=${REDIS_SERVER:-$(command -v redis-server || true)}

pids=()  # every server started here and not yet stopped
alive() {  # PID: running (a zombie, exited but not yet waited for, is not)
  local state; state=$(sed -e 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)
  [ -n "$state" ] && [ "$state" != Z ]
}
stop_pid() {  # PID: SIGTERM, 30 s to exit, then SIGKILL to its process group (each server leads its own)
  local pid=$1 i keep=() p
  kill -TERM "$pid" 2>/dev/null
  for ((i = 0; i < 150; i++)); do alive "$pid" || break; sleep 0.2; done
  if alive "$pid"; then echo "   pid $pid ignored SIGTERM for 30 s: SIGKILL"; kill -KILL -- "-$pid" 2>/dev/null; fi
  wait "$pid" 2>/dev/null
  for p in ${pids[@]+"${pids[@]}"}; do [ "$p" = "$pid" ] || keep+=("$p"); done
  pids=(${keep[@]+"${keep[@]}"})
}
cleanup() {
  local p
  for p in ${pids[@]+"${pids[@]}"}; do stop_pid "$p"; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
left() { echo $((deadline - SECONDS)); }
at_most() {  # SECONDS: cut to the budget left, and never under 5
  local v l; l=$(left); v=$(($1 < l ? $1 : l)); echo $((v > 5 ? v : 5))
}
source "$(dirname "$0")/serve_helpers.sh"  # free_port, wait_ready

missing=$(python3 - <<'PY'
import importlib.util as u
print(" ".join(m for m in ("fastapi", "uvicorn", "zmq", "aiohttp", "redis", "sglang_router") if u.find_spec(m) is None))
PY
)
if [ -n "$missing" ]; then echo "missing Python packages: $missing"; exit 2; fi
if [ -z "$redis_bin" ] || [ ! -x "$redis_bin" ]; then \
  echo "redis-server not found: put it on PATH or set REDIS_SERVER"; exit 2; fi
command -v setsid > /dev/null \
  || { echo "setsid not found (util-linux): each server must lead its own process group"; exit 2; }

tok_flags=()
if [ -n "${TOKENIZER:-}" ]; then
  tok_flags=(--tokenizer "$TOKENIZER")
elif [[ $model == builtin:* ]]; then  # chat needs a tokenizer; its vocabulary must cover every id the model samples
  python3 - "$model" "$work/tokenizer" <<'PY' || { echo "could not write a tokenizer for $model"; exit 2; }
import json, sys
from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerFast
from tierlm.models.loader import resolve_model_dir
from tierlm.utils.tiny_model import build_tokenizer
vocab_size = json.load(open(resolve_model_dir(sys.argv[1], need_weights=False) / "config.json"))["vocab_size"]
base = build_tokenizer()
state = json.loads(base.backend_tokenizer.to_str())
vocab = state["model"]["vocab"]
vocab.update({f"\u0120w{i}": i for i in range(len(vocab), vocab_size)})  # decode as " w<id>"
tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(state)), eos_token="<|endoftext|>",
                              pad_token="<|endoftext|>")
tok.chat_template = base.chat_template
tok.save_pretrained(sys.argv[2])
PY
  tok_flags=(--tokenizer "$work/tokenizer")
fi

run_mode() {  # MODE: fresh replicas (and Redis), a warm-up per replica, the router, the client, /stats, stop
  local mode=$1 policy shared i port url rpid rport t0=$SECONDS
  case $mode in
    aware-shared) policy=cache_aware shared=1 ;;
    aware-private) policy=cache_aware shared=0 ;;
    rr-shared) policy=round_robin shared=1 ;;
    rr-private) policy=round_robin shared=0 ;;
    *) echo "== $mode: unknown mode (aware-shared, aware-private, rr-shared, rr-private)"; return ;;
  esac
  if [ "$(left)" -lt 120 ]; then echo "== $mode: skipped, $(left) s left of BUDGET_S"; return; fi
  echo "== $mode: router --policy $policy, $([ $shared = 1 ] && echo shared Redis || echo private file) L3"
  local stores=("file://$work/$mode-l3-a" "file://$work/$mode-l3-b") urls=() rep_pids=() redis_pid=""
  if [ $shared = 1 ]; then  # a fresh Redis per mode: nothing carries over from an earlier mode
    port=$(free_port)
    mkdir -p "$work/redis-$mode"
    setsid "$redis_bin" --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work/redis-$mode" \
      > "$out/$mode-redis.log" 2>&1 &
    redis_pid=$!; pids+=("$redis_pid")
    wait_ready "tcp://127.0.0.1:$port" "$redis_pid" 15 || { stop_pid "$redis_pid"; return; }
    stores=("redis://127.0.0.1:$port/0" "redis://127.0.0.1:$port/0")
  fi
  for i in 0 1; do
    port=$(free_port)
    local name=$([ $i = 0 ] && echo a || echo b) gpu=${gpus[$i]:-}
    ( [ -n "$gpu" ] && export CUDA_VISIBLE_DEVICES=$gpu
      exec setsid python3 -m tierlm serve --model "$model" --load-format dummy --served-model-name fleet \
        --port "$port" --enable-hicache --kv-store "${stores[$i]}" "${prefetch_flags[@]}" \
        ${tok_flags[@]+"${tok_flags[@]}"} "${engine_flags[@]}" ) > "$out/$mode-replica-$name.log" 2>&1 &
    rep_pids+=($!); pids+=($!); urls+=("http://127.0.0.1:$port")
  done
  local ok=1
  for i in 0 1; do
    wait_ready "${urls[$i]}/health" "${rep_pids[$i]}" "$(at_most 300)" \
      || { ok=0; tail -n 5 "$out/$mode-replica-$([ $i = 0 ] && echo a || echo b).log"; }
  done
  if [ $ok = 1 ]; then
    echo "   replicas ready after $((SECONDS - t0)) s; warm-up"
    # First-use work (kernel builds, new GEMM shapes) must not land in round 1: two short conversations
    # straight to each replica, with messages no measured conversation shares.
    for i in 0 1; do
      timeout "$(at_most 120)" python3 benchmarks/fleet_multiturn.py --url "${urls[$i]}" --model fleet \
        "${client_flags[@]}" --num-conversations 2 --num-rounds 2 --seed $((seed + 1000 + i)) \
        > "$out/$mode-warmup-$i.txt" 2>&1 \
        || echo "   warm-up of replica $i failed: $(tail -n 1 "$out/$mode-warmup-$i.txt")"
    done
    rport=$(free_port)
    setsid python3 -m sglang_router.launch_router --host 127.0.0.1 --port "$rport" --prometheus-host 127.0.0.1 \
      --prometheus-port "$(free_port)" --worker-urls "${urls[@]}" --policy "$policy" --log-level warn \
      > "$out/$mode-router.log" 2>&1 &
    rpid=$!; pids+=("$rpid")
    if wait_ready "http://127.0.0.1:$rport/readiness" "$rpid" "$(at_most 60)" 2; then
      echo "   router ready; conversations through it"
      timeout "$(at_most $(($(left) - 20)))" python3 benchmarks/fleet_multiturn.py --url "http://127.0.0.1:$rport" \
        --model fleet "${client_flags[@]}" --seed "$seed" --json > "$out/$mode.json" 2> "$out/$mode.err"
      local rc=$?
      [ $rc = 0 ] || { echo "   client exit $rc: $(tail -n 1 "$out/$mode.err")"; \
        [ -s "$out/$mode.json" ] || rm -f "$out/$mode.json"; }
      for i in 0 1; do
        python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1],
            timeout=10).read().decode())' \
          "${urls[$i]}/stats" > "$out/$mode-stats-$i.json" 2>/dev/null || rm -f "$out/$mode-stats-$i.json"
      done
    else
      echo "   router not ready:"; tail -n 5 "$out/$mode-router.log"
    fi
    stop_pid "$rpid"
  fi
  for i in 0 1; do stop_pid "${rep_pids[$i]}"; done
  [ -n "$redis_pid" ] && stop_pid "$redis_pid"
  rm -rf "$work/$mode-l3-a" "$work/$mode-l3-b" "$work/redis-$mode"
  echo "   $mode took $((SECONDS - t0)) s"
}

python3 -c "import torch; c = torch.cuda.is_available()
print('torch', torch.__version__, torch.cuda.get_device_name() if c else 'CPU', '| GPUs', torch.cuda.device_count())"
for mode in $modes; do run_mode "$mode"; done

python3 - "$out" "$modes" <<'PY'
import json, os, sys
out, modes = sys.argv[1], sys.argv[2].split()
def load(path):
    try:
        return json.load(open(path))
    except (OSError, ValueError):
        return None
def num(v, spec):
    return "-" if v is None else format(v, spec)
everything = {}
print(f"\n{'mode':<15}{'TTFT p50 ms by round':<28}{'cached by round %':<20}{'req/s':>7}{'out tok/s':>10}"
      f"{'cached':>8}{'L3 hit tok':>11}{'failed':>8}")
for mode in modes:
    r = load(f"{out}/{mode}.json")
    if r is None:
        print(f"{mode:<15}(no result)")
        continue
    stats = [load(f"{out}/{mode}-stats-{i}.json") for i in (0, 1)]
    l3 = [((s or {}).get("tier_hits") or {}).get("L3", {}).get("tokens") for s in stats]
    r["l3_hit_tokens"] = None if None in l3 else sum(l3)
    everything[mode] = r
    ttft = " / ".join(num(x["ttft_ms"]["p50"], ".0f") for x in r["rounds"])
    cached = "/".join(num(None if x["cached_share"] is None else 100 * x["cached_share"], ".0f") for x in r["rounds"])
    print(f"{mode:<15}{ttft:<28}{cached:<20}{num(r['requests_per_s'], '.2f'):>7}{num(r['output_tok_per_s'], '.0f'):>10}"
          f"{num(r['cached_share'], '.1%'):>8}{num(r['l3_hit_tokens'], 'd'):>11}{r['failed'] + r['skipped']:>8}")
json.dump(everything, open(f"{out}/summary.json", "w"), indent=1)
print(f"all reports: {out}/summary.json")
PY
