#!/usr/bin/env bash
# Decode attention with several KV heads per stage-1 program (#20), one GPU, this tree only: the decode kernel
# cases and the Triton backend's decode tests, `bench_attention.py --kvp-sweep` at SHAPES (large batches, one split
# per request), then Qwen3-0.6B's offline workload (`tierlm bench offline`, nano-vllm, dummy weights) with
# decode_kv_per_program at each of KVPS (benchmarks/with_decode_kvp.py), ROUNDS rounds in turn after one uncounted
# run that fills the cache root. About 8 minutes.
# Usage: [SHAPES=...] [KVPS="1 2 4"] [ROUNDS=2] bash benchmarks/gpu_decode_kvp.sh [OUTDIR]
set -uo pipefail
out=${1:-decode-kvp}; mkdir -p "$out"; out=$(cd "$out" && pwd)
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TIERLM_CACHE_DIR=$PWD/.cache-kvp
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_kernels.py \
  tests/attention/test_triton_backend.py -k decode 2>&1 | tail -n 2
timeout 200 python3 benchmarks/bench_attention.py --kvp-sweep \
  --decode-shapes "${SHAPES:-96:1100,256:800,128:100-2000,160:400-1600}" > "$out/kvp.txt" 2>&1 \
  || echo "kvp sweep failed (exit $?)"
grep "^kvp\|copy\|^device" "$out/kvp.txt"
offline() {  # KVP TAG
  timeout 120 python3 benchmarks/with_decode_kvp.py "$1" -m tierlm bench offline --model builtin:qwen3-0.6b \
    --load-format dummy --skip-tokenizer-init --json > "$out/$2.json" 2> "$out/$2.err" || echo "$2 failed"
}
offline 1 cold
for round in $(seq 1 "${ROUNDS:-2}"); do
  for kvp in ${KVPS:-1 2 4}; do offline "$kvp" "r$round-kvp$kvp"; done
done
python3 benchmarks/offline_summary.py "$out"/r*.json
