#!/usr/bin/env bash
# How many KV splits decode attention should make at large, mixed-length batches (#20), one GPU, this tree only:
# `bench_attention.py --waves-sweep` at SHAPES (wave target 4-32, fewest tokens per split 128/256), then
# Qwen3-0.6B's offline workload (`tierlm bench offline`, nano-vllm, dummy weights) with decode_waves at each of
# WAVES (benchmarks/with_attention_config.py), ROUNDS rounds in turn after one uncounted run that fills the cache
# root. About 7 minutes. Usage: [SHAPES=...] [WAVES="4 8 16"] [ROUNDS=2] bash benchmarks/gpu_decode_waves.sh [OUTDIR]
set -uo pipefail
out=${1:-decode-waves}; mkdir -p "$out"; out=$(cd "$out" && pwd)
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TIERLM_CACHE_DIR=$PWD/.cache-waves
timeout 200 python3 benchmarks/bench_attention.py --waves-sweep \
  --decode-shapes "${SHAPES:-64:100-2000,96:100-2000,128:100-2000,192:100-1800,256:100-1500,128:1100}" \
  > "$out/waves.txt" 2>&1 || echo "waves sweep failed (exit $?)"
grep -A12 "^device\|^ *shape" "$out/waves.txt" | grep -v "^--"
offline() {  # WAVES TAG
  timeout 120 python3 benchmarks/with_attention_config.py "decode_waves=$1" -m tierlm bench offline \
    --model builtin:qwen3-0.6b --load-format dummy --skip-tokenizer-init --json > "$out/$2.json" 2> "$out/$2.err" \
    || echo "$2 failed"
}
offline 4 cold
for round in $(seq 1 "${ROUNDS:-2}"); do
  for w in ${WAVES:-4 8 16}; do offline "$w" "r$round-waves$w"; done
done
python3 benchmarks/offline_summary.py "$out"/r*.json
