#!/usr/bin/env bash
# One device call on two GPUs: tensor-parallel correctness (tiny models, TP=2 vs TP=1), then the
# Llama-3.1-8B shape (dummy weights) offline and batch-1 at TP=1 and TP=2, and multi-turn with the host
# tier at TP=2. Usage: bash benchmarks/gpu_tp.sh OUTDIR
set -uo pipefail
out=${1:-out}
mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
export TIERLM_CACHE_DIR=$PWD/.cache-tp
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__,
    torch.cuda.device_count(), 'x', torch.cuda.get_device_name())"
timeout 150 python3 benchmarks/gpu_tp_check.py 2>&1 | grep -v "it/s\]" | grep -E "tiny|TP CHECK|Error|error" \
  | tee "$out/check.txt"
m=(--model builtin:llama-3.1-8b --load-format dummy --skip-tokenizer-init)
for tp in 1 2; do
  timeout 200 python3 -m tierlm bench offline "${m[@]}" --tp-size $tp --json > "$out/offline_tp$tp.json" \
    2> "$out/offline_tp$tp.err" || tail -5 "$out/offline_tp$tp.err"
  timeout 150 python3 -m tierlm bench offline "${m[@]}" --tp-size $tp --num-requests 1 --input-len 128 128 \
    --output-len 512 512 --json > "$out/batch1_tp$tp.json" 2> "$out/batch1_tp$tp.err" || tail -5 "$out/batch1_tp$tp.err"
done
timeout 300 python3 -m tierlm bench multiturn "${m[@]}" --tp-size 2 --num-clients 32 --num-rounds 3 --answer-len 64 \
  --concurrency 8 --modes gpu,l2 --json --output-dir "$out/mt" > "$out/mt_tp2.json" 2> "$out/mt_tp2.err" \
  || tail -5 "$out/mt_tp2.err"
python3 - "$out" <<'PY'
import json, sys, os
d = sys.argv[1]
for name in ("offline_tp1", "offline_tp2", "batch1_tp1", "batch1_tp2"):
    try:
        o = json.load(open(f"{d}/{name}.json")); t = o["tierlm"]
    except Exception as e:
        print(name, "missing", e); continue
    print(f"{name}: {t['output_tok_per_s']:.0f} out tok/s ({t['output_tokens']} tok, {t['elapsed_s']:.1f} s), "
          f"TTFT p50 {t['ttft_s']['p50']:.3f} s, TPOT p50/p99 "
          f"{t['tpot_s']['p50']*1e3:.3f}/{t['tpot_s']['p99']*1e3:.3f} ms; "
          f"graphs {o['engine_info'].get('cuda_graph')} tp {o['engine_info'].get('tp_size')}")
try:
    print("multiturn tp2:", json.dumps(json.load(open(f"{d}/mt_tp2.json")))[:3000])
except Exception as e:
    print("multiturn missing", e)
PY
