#!/usr/bin/env bash
# A request after a pause with the device kept warm (--keep-warm-s, the engine's keep_warm) and without, in one
# call: what a pause costs outside any engine (benchmarks/idle_wake.py, sleeping; spinning; a tiny kernel every
# 10 ms), a request's host phases in-process (benchmarks/idle_gap.py --phases, with and without --keep-warm),
# and TTFT through `tierlm serve` (benchmarks/idle_gap_serve.py, the default --keep-warm-s 0 against 10).
# MODEL (default builtin:qwen3-0.6b, dummy weights); BIG=1 adds Llama-3.1-8B in-process; PINNED=1 adds the model
# in-process on one pinned core, pausing asleep and spinning (kept warm both ways): the host's own part.
# Usage: bash benchmarks/gpu_keep_warm.sh [OUTDIR]
set -uo pipefail
source "$(dirname "$0")/ab_helpers.sh"  # gpu_start
gpu_start "${1:-keep-warm}"  # sets out, here; PYTHONPATH
model=${MODEL:-builtin:qwen3-0.6b}
gaps=0,0.05,0.2,1

for mode in "" --spin "--keepalive 10"; do
  echo "== idle_wake ${mode:-(sleeping)}"
  # shellcheck disable=SC2086  # mode is empty or words
  timeout 60 python3 benchmarks/idle_wake.py --gaps $gaps --repeats 5 $mode
done 2>&1 | tee "$out/wake.txt"

inproc() {  # TAG MODEL ARGS...
  local tag=$1 m=$2; shift 2
  # shellcheck disable=SC2086  # PIN is empty or a taskset command
  timeout 150 ${PIN:-} python3 benchmarks/idle_gap.py --model "$m" --gaps $gaps --repeats 6 --phases 10 "$@" 2>&1 \
    | grep -v -i -e warn -e "^loading safetensors" | tail -n 12 > "$out/$tag.txt"
  echo "== $tag"; cat "$out/$tag.txt"
}
inproc inproc-cold "$model"
inproc inproc-warm "$model" --keep-warm
if [ "${BIG:-0}" = 1 ]; then
  inproc big-cold builtin:llama-3.1-8b
  inproc big-warm builtin:llama-3.1-8b --keep-warm
fi
if [ "${PINNED:-0}" = 1 ]; then  # one core: torch's own threads are 1 there, which a GPU step does not need
  pin="taskset -c $(( $(nproc) / 2 ))"
  PIN=$pin inproc pinned-sleep-warm "$model" --keep-warm
  PIN=$pin inproc pinned-spin-warm "$model" --keep-warm --spin
fi

flags=(--load-format dummy --skip-tokenizer-init)
[[ $model == builtin:* ]] || flags=()
for warm in 0 10 0 10; do  # the default (0) against a 10 s window, alternating: servers differ run to run
  echo "== serve --keep-warm-s $warm"
  timeout 200 python3 benchmarks/idle_gap_serve.py --model "$model" --gaps $gaps --repeats 8 -- \
    "${flags[@]}" --keep-warm-s $warm 2>&1 | tail -n 5
done | tee "$out/serve.txt"
