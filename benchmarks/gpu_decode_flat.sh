#!/usr/bin/env bash
# Large-batch decode, this tree (A) against another checkout (B, e.g. `git archive COMMIT | tar -x -C DIR`) on one
# GPU: Qwen3-0.6B's offline throughput (nano-vllm workload, dummy weights, temperature 0.6) with A's decode
# attention at TIERLM_DECODE_ITEMS requests per program (`kernels.decode_attention_flat`; 1 = the split kernel)
# and B, in two rounds (each side's first run fills its cache root and is not counted); then the decode kernel
# alone at large-batch shapes per ITEMS (graph-replayed), the sampler (torch against the fused race) and the
# kernel tests compiled for the device.
# About 8 minutes. Usage: bash benchmarks/gpu_decode_flat.sh B_DIR [OUTDIR] [ITEMS...]
set -uo pipefail
base=$(cd "$1" && pwd); out=${2:-decode-flat}
shift 2 || shift $#
items=${*:-"2 4"}
mkdir -p "$out"; out=$(cd "$out" && pwd)
here=$PWD
export PYTHONUNBUFFERED=1
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"

offline() {  # SIDE TAG ITEMS: one `bench offline` run with SIDE's code
  local dir=$here; [ "$1" = B ] && dir=$base
  (cd "$dir" && TIERLM_DECODE_ITEMS=$3 TIERLM_CACHE_DIR=$here/.cache-flat-$1 PYTHONPATH=$dir timeout 120 \
    python3 -m tierlm bench offline --model builtin:qwen3-0.6b --load-format dummy --skip-tokenizer-init --json \
    > "$out/$2.json" 2> "$out/$2.err") || echo "$2 failed"
}
offline A cold-A 1
offline B cold-B 1
for round in 1 2; do
  offline B "r$round-B" 1
  for i in 1 $items; do offline A "r$round-A-items$i" "$i"; done
done
python3 benchmarks/offline_summary.py "$out"/r*.json
PYTHONPATH=$here timeout 60 python3 benchmarks/bench_sampler.py 2>&1 | tail -n 4

PYTHONPATH=$here timeout 150 python3 benchmarks/bench_attention.py --items "1,${items// /,}" \
  --decode-shapes ${SHAPES:-512:288,256:576,256:100-1500,128:1152,128:100-2000,64:2304} > "$out/attn.txt" 2>&1 \
  || echo "bench_attention failed (exit $?)"
grep -A20 "^ *shape" "$out/attn.txt"
grep " items\| mc128 " "$out/attn.txt" | grep -v "^ *shape" | head -40
PYTHONPATH=$here timeout 150 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_kernels.py -k decode \
  tests/kernels/test_race_sample.py 2>&1 | tail -n 3
