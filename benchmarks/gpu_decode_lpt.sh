#!/usr/bin/env bash
# Decode attention's stage 1 taking a batch's requests longest first (#20), one GPU, this tree only: the decode
# kernel cases and the Triton backend's decode tests, `bench_attention.py --lpt-sweep` at SHAPES (as they come
# against longest first, KV tile 64/128, graph-replayed; the sort's own time), then Qwen3-0.6B's offline
# workload (`tierlm bench offline`, nano-vllm, dummy weights) with `decode_longest_first` at each of FROM (0:
# never) through benchmarks/with_attention_config.py, ROUNDS rounds in turn after one uncounted run that fills
# the cache root; last, `read_floor.py --sizes-mb` (how fast one kernel reads buffers of the sizes of the linears).
# About 7 minutes.
# Usage: [SHAPES=...] [FROM="0 16"] [ROUNDS=2] bash benchmarks/gpu_decode_lpt.sh [OUTDIR]
set -uo pipefail
out=${1:-decode-lpt}; mkdir -p "$out"; out=$(cd "$out" && pwd)
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TIERLM_CACHE_DIR=$PWD/.cache-lpt
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_kernels.py \
  tests/attention/test_triton_backend.py tests/attention/test_decode_scratch.py -k "decode or order" 2>&1 | tail -n 2
timeout 200 python3 benchmarks/bench_attention.py --lpt-sweep \
  --decode-shapes "${SHAPES:-16:100-2000,32:100-2000,64:100-2000,128:100-2000,192:100-1800,256:100-1500,256:800}" \
  > "$out/lpt.txt" 2>&1 || echo "lpt sweep failed (exit $?)"
grep "^lpt\|copy\|^device" "$out/lpt.txt"
offline() {  # FROM TAG
  timeout 120 python3 benchmarks/with_attention_config.py "decode_longest_first=$1" -m tierlm bench offline \
    --model builtin:qwen3-0.6b --load-format dummy --skip-tokenizer-init --json > "$out/$2.json" 2> "$out/$2.err" \
    || echo "$2 failed"
}
offline 16 cold
for round in $(seq 1 "${ROUNDS:-2}"); do
  for f in ${FROM:-0 16}; do offline "$f" "r$round-from$f"; done
done
python3 benchmarks/offline_summary.py "$out"/r*.json
timeout 120 python3 benchmarks/read_floor.py --sizes-mb 8,32,50,117,235,1024 2>&1 | tee "$out/read.txt" | tail -n 8
