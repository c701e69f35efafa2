#!/usr/bin/env bash
# One device call: engine parity on GPU, then the offline throughput benchmark and batch-1 decode latency.
# Usage: bash benchmarks/run_gpu_engine.sh OUTDIR
set -uo pipefail
out=${1:-out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 TIERLM_CACHE_DIR=${TIERLM_CACHE_DIR:-$PWD/.tierlm-cache}
python3 -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name())"
python3 benchmarks/gpu_engine_check.py 2>&1 | tee "$out/parity.txt" | grep -v "it/s\]"
python3 -m tierlm bench offline --json --compare hf > "$out/offline.json" 2> "$out/offline.err"; tail -3 "$out/offline.err"
python3 -m tierlm bench offline --num-requests 1 --input-len 128 128 --output-len 512 512 --json > "$out/batch1.json" 2>/dev/null
python3 - "$out" <<'PY'
import json, sys
o = json.load(open(f"{sys.argv[1]}/offline.json")); b = json.load(open(f"{sys.argv[1]}/batch1.json"))
t = o["tierlm"]
print(f"offline: {t['output_tok_per_s']:.0f} out tok/s ({t['output_tokens']} tok, {t['elapsed_s']:.1f} s), "
      f"TTFT p50/p99 {t['ttft_s']['p50']:.2f}/{t['ttft_s']['p99']:.2f} s, TPOT p50/p99 "
      f"{t['tpot_s']['p50']*1e3:.2f}/{t['tpot_s']['p99']*1e3:.2f} ms; start-up {o['startup']}")
if "hf" in o: print(f"hf: {o['hf']['output_tok_per_s']:.0f} tok/s, speed-up {o['speedup_vs_hf']:.1f}x")
print(f"batch-1 TPOT p50 {b['tierlm']['tpot_s']['p50']*1e3:.3f} ms; start-up {b['startup']}")
PY
