#!/usr/bin/env bash
# --compile on one GPU: for builtin:qwen3-0.6b and builtin:llama-3.1-8b (dummy weights), batch-1 TPOT and offline
# throughput without and with --compile, alternated in the same run on one cache root; greedy agreement of the
# two on qwen3-0.6b; then `tierlm bench startup` (cold / warm / imported root, eager and --compile). A short
# table comes last. About 8 minutes on an H200; PART runs a piece of it (each piece stays under 5 minutes).
# Usage: bash benchmarks/gpu_compile.sh OUTDIR [all|qwen|llama|startup]
set -uo pipefail
out=${1:-out-compile}; part=${2:-all}
mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
root=${TIERLM_CACHE_DIR:-$PWD/.cache-compile}
source "$(dirname "$0")/ab_helpers.sh"  # print_versions
print_versions

engine_runs() {  # model tag num_requests
  local model=$1 tag=$2 n=$3
  for mode in eager compile; do
    flag=(); [ "$mode" = compile ] && flag=(--compile)
    t0=$(date +%s)
    TIERLM_CACHE_DIR=$root timeout 300 python3 -m tierlm bench offline --model "$model" "${flag[@]}" \
      --num-requests "$n" --json > "$out/$tag-$mode-offline.json" 2> "$out/$tag-$mode-offline.err" \
      || { echo "$tag $mode offline failed:"; tail -n 5 "$out/$tag-$mode-offline.err"; }
    TIERLM_CACHE_DIR=$root timeout 240 python3 -m tierlm bench offline --model "$model" "${flag[@]}" \
      --num-requests 1 --input-len 128 128 --output-len 512 512 --json > "$out/$tag-$mode-b1.json" \
      2> "$out/$tag-$mode-b1.err" || { echo "$tag $mode batch-1 failed:"; tail -n 5 "$out/$tag-$mode-b1.err"; }
    echo "$tag $mode: $(( $(date +%s) - t0 )) s"
  done
}

if [ "$part" = all ] || [ "$part" = qwen ]; then
  engine_runs builtin:qwen3-0.6b qwen 256
  # greedy agreement of eager and compiled decoding (bf16: Inductor's fusions may round differently)
  TIERLM_CACHE_DIR=$root timeout 240 python3 - > "$out/qwen-parity.json" 2> "$out/qwen-parity.err" <<'PY'
import gc, json
import torch
from tierlm import LLM, SamplingParams
prompts = [[(13 * i + 7 * j) % 5000 + 10 for j in range(16 + 8 * i)] for i in range(8)]
params = SamplingParams(temperature=0.0, max_tokens=64, ignore_eos=True, detokenize=False)

def greedy(compile):
    llm = LLM("builtin:qwen3-0.6b", load_format="dummy", skip_tokenizer_init=True, max_model_len=2048, compile=compile)
    out = [o.token_ids for o in llm.generate(prompts, params)]
    llm.close()
    return out

got = {}
for compile in (False, True):
    got[compile] = greedy(compile)
    gc.collect()
    torch.cuda.empty_cache()
same = [next((k for k, (a, b) in enumerate(zip(x, y)) if a != b), len(x)) for x, y in zip(got[False], got[True])]
print(json.dumps({"identical": sum(s == 64 for s in same), "of": len(same), "first_difference_at": same}))
PY
  [ $? = 0 ] || { echo "qwen parity failed:"; tail -n 5 "$out/qwen-parity.err"; }
fi
if [ "$part" = all ] || [ "$part" = llama ]; then
  engine_runs builtin:llama-3.1-8b llama 128
fi
if [ "$part" = all ] || [ "$part" = startup ]; then
  timeout 420 python3 -m tierlm bench startup --model builtin:qwen3-0.6b --json > "$out/startup.json" \
    2> "$out/startup.err" || { echo "bench startup failed:"; tail -n 5 "$out/startup.err"; }
fi

python3 - "$out" <<'PY'
import json, os, sys
d = sys.argv[1]
def load(name):
    try:
        return json.load(open(os.path.join(d, name)))
    except (OSError, ValueError):
        return None
print("\n== --compile: offline throughput and batch-1 TPOT (same run, same root) ==")
print(f"{'model':<7}{'mode':<9}{'out tok/s':>11}{'TPOT p50 ms':>13}{'b1 TPOT p50 ms':>16}{'start-up s':>12}"
      f"{'compilations':>14}")
for tag in ("qwen", "llama"):
    for mode in ("eager", "compile"):
        o, b = load(f"{tag}-{mode}-offline.json"), load(f"{tag}-{mode}-b1.json")
        if o is None and b is None:
            continue
        tps = f"{o['tierlm']['output_tok_per_s']:.0f}" if o else "-"
        tpot = f"{o['tierlm']['tpot_s']['p50'] * 1e3:.3f}" if o else "-"
        b1 = f"{b['tierlm']['tpot_s']['p50'] * 1e3:.3f}" if b else "-"
        info = (o or b)["engine_info"]
        print(f"{tag:<7}{mode:<9}{tps:>11}{tpot:>13}{b1:>16}{info.get('startup_s', 0):>12.1f}"
              f"{info.get('compilations', '-'):>14}")
p = load("qwen-parity.json")
if p:
    print(f"qwen3-0.6b greedy, compiled vs eager: {p['identical']}/{p['of']} identical over 64 tokens; "
          f"first difference at {p['first_difference_at']}")
s = load("startup.json")
if s:
    print("\n== tierlm bench startup (builtin:qwen3-0.6b) ==")
    print(f"{'mode':<9}{'root':<10}{'construct s':>12}{'first token s':>15}{'process s':>11}{'compilations':>14}"
          f"{'new kernels':>13}{'vs cold':>9}")
    for c in s["cases"]:
        if "skipped" in c:
            print(f"{c['mode']:<9}{c['root']:<10}  skipped: {c['skipped']}")
            continue
        print(f"{c['mode']:<9}{c['root']:<10}{c['construct_s']:>12.2f}{c['first_token_s']:>15.2f}"
              f"{c['process_s']:>11.2f}"
              f"{c['compilations']:>14}{c['new_kernels']:>13}{c['vs_cold']:>9.0%}")
PY
