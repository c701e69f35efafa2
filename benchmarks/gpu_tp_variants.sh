#!/usr/bin/env bash
# Tensor parallelism at TP=2 on a tiny model under each combination of CUDA graphs and overlap scheduling,
# each bounded: a run that does not finish gets every process's Python stacks (SIGUSR1) in its log.
# Usage: bash benchmarks/gpu_tp_variants.sh OUTDIR
set -uo pipefail
out=${1:-out}; mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TIERLM_CACHE_DIR=$PWD/.cache-tp NCCL_DEBUG=WARN
python3 -c "from tierlm.utils.tiny_model import make_tiny_model; make_tiny_model('$out/tiny', arch='qwen3')" \
  >/dev/null 2>&1
tree() { local p=$1; echo $p; for c in $(cat /proc/$p/task/*/children 2>/dev/null); do tree $c; done; }
run() {
  local name=$1; shift
  python3 -m tierlm bench offline --model "$out/tiny" --dtype float32 --kv-cache-gb 0.05 --num-requests 16 \
    --input-len 16 64 --output-len 8 32 --tp-size 2 "$@" > "$out/$name.log" 2>&1 &
  local pid=$! t=0
  while kill -0 $pid 2>/dev/null && [ $t -lt ${LIMIT:-50} ]; do sleep 1; t=$((t+1)); done
  if kill -0 $pid 2>/dev/null; then
    for p in $(tree $pid); do kill -USR1 $p 2>/dev/null; done; sleep 3
    for p in $(tree $pid); do kill -9 $p 2>/dev/null; done
    echo "$name: HUNG after ${t}s"
  else
    wait $pid; echo "$name: rc $? in ${t}s: $(grep -E '^tierlm ' "$out/$name.log" | head -1)"
  fi
}
run graphs_overlap
run nographs_overlap --no-cuda-graph
run graphs_nooverlap --no-overlap-schedule
run nographs_nooverlap --no-cuda-graph --no-overlap-schedule
run torch_nographs --attention-backend torch --no-cuda-graph --no-overlap-schedule
