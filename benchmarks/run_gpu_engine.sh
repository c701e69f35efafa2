#!/usr/bin/env bash
# One device call: engine parity on GPU, the offline benchmark from a cold and then a warm cache root, and
# batch-1 decode latency. Set COMPARE_HF=1 to add the transformers comparison to the warm run.
# Usage: bash benchmarks/run_gpu_engine.sh OUTDIR
set -uo pipefail
out=${1:-out}
mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
python3 -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__,
    'transformers', transformers.__version__, torch.cuda.get_device_name())"
if [ "${SKIP_PARITY:-0}" != 1 ]; then
  TIERLM_CACHE_DIR=$PWD/.cache-parity python3 benchmarks/gpu_engine_check.py 2>&1 | grep -v "it/s\]" \
    | tee "$out/parity.txt"
fi
root=$PWD/.cache-bench; rm -rf "$root"
compare=(); [ "${COMPARE_HF:-0}" = 1 ] && compare=(--compare hf)
TIERLM_CACHE_DIR=$root python3 -m tierlm bench offline --json > "$out/offline_cold.json" 2> "$out/offline_cold.err"
TIERLM_CACHE_DIR=$root python3 -m tierlm bench offline --json "${compare[@]}" > "$out/offline.json" \
  2> "$out/offline.err"
grep -h "start-up\|autotune" "$out/offline_cold.err" "$out/offline.err"
TIERLM_CACHE_DIR=$root python3 -m tierlm bench offline --num-requests 1 --input-len 128 128 --output-len 512 512 \
  --json > "$out/batch1.json" 2>/dev/null
python3 - "$out" <<'PY'
import json, sys
d = sys.argv[1]
for name in ("offline_cold", "offline", "batch1"):
    o = json.load(open(f"{d}/{name}.json")); t = o["tierlm"]
    print(f"{name}: {t['output_tok_per_s']:.0f} out tok/s ({t['output_tokens']} tok, {t['elapsed_s']:.1f} s), "
          f"TTFT p50/p99 {t['ttft_s']['p50']:.3f}/{t['ttft_s']['p99']:.3f} s, TPOT p50/p99 "
          f"{t['tpot_s']['p50']*1e3:.3f}/{t['tpot_s']['p99']*1e3:.3f} ms; start-up {o['startup']}, "
          f"new kernels {o['engine_info'].get('new_kernels')}")
    if "hf" in o:
        print(f"  hf: {o['hf']['output_tok_per_s']:.0f} tok/s, speed-up {o['speedup_vs_hf']:.1f}x")
PY
