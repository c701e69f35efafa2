#!/usr/bin/env bash
# One call on one H200 (about 8 minutes): the MoE and latent-attention models on their fast path.
#  (a) correctness: tiny deepseek_v2 / deepseek_v3 / qwen3_moe in fp32, the default CUDA path (Triton MLA or
#      GQA decode, decode CUDA graphs, overlap, fused MoE kernel) against the torch reference (torch attention,
#      no graphs or overlap, the torch MoE loop), token for token; then DeepSeek-V2-Lite's shapes in fp32
#      (dummy weights; 64 experts, top-6): the same two paths, first divergence and logprob closeness;
#  (b) `tierlm bench offline` on builtin:deepseek-v2-lite and builtin:qwen3-30b-a3b (dummy weights), the
#      workload of the first GPU run of the reference paths (docs/benchmarks.md);
#  (c) `tierlm bench multiturn` on builtin:deepseek-v2-lite, GPU only vs +L2, a device pool of --kv-cache-gb
#      $MT_KV_GB (6,900 latent tokens at 0.2) under a working set of 33,024 tokens (4.8x);
# then one summary table. Each step has a time limit (240 s, 2 x 110 s, 180 s) so the table always comes.
# Usage: bash benchmarks/gpu_deepseek.sh OUTDIR  (PARTS=bc: only those parts)
set -uo pipefail
out=${1:-out}
mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TIERLM_CACHE_DIR=${TIERLM_CACHE_DIR:-$PWD/.tierlm-cache}
MT_KV_GB=${MT_KV_GB:-0.2}
PARTS=${PARTS:-abc}
dummy=(--load-format dummy --skip-tokenizer-init)

source "$(dirname "$0")/ab_helpers.sh"  # print_versions, stamp
print_versions

if [[ $PARTS == *a* ]]; then
stamp "(a) correctness"
timeout 240 python3 benchmarks/gpu_engine_check.py --archs deepseek_v2,deepseek_v3,qwen3_moe \
  --model builtin:deepseek-v2-lite --dtype float32 --prompts 8 --max-tokens 16 > "$out/check.txt" 2> "$out/check.err"
echo "exit $?" >> "$out/check.txt"
cat "$out/check.txt"
fi

for model in deepseek-v2-lite qwen3-30b-a3b; do
  [[ $PARTS == *b* ]] || break
  stamp "(b) bench offline $model"
  timeout 110 python3 -m tierlm bench offline --model "builtin:$model" "${dummy[@]}" --num-requests 16 \
    --input-len 128 512 --output-len 32 64 --json > "$out/offline-$model.json" 2> "$out/offline-$model.err" \
    || { echo "failed:"; tail -n 5 "$out/offline-$model.err"; }
done

if [[ $PARTS == *c* ]]; then
stamp "(c) bench multiturn deepseek-v2-lite"
timeout 180 python3 -m tierlm bench multiturn --model builtin:deepseek-v2-lite "${dummy[@]}" --modes gpu,l2 \
  --num-clients 24 --num-rounds 3 --first-turn-len 1024 --turn-len 128 --answer-len 32 --concurrency 4 \
  --kv-cache-gb "$MT_KV_GB" --output-dir "$out/mt" --json > "$out/multiturn.json" 2> "$out/multiturn.err" \
  || { echo "failed:"; tail -n 5 "$out/multiturn.err"; }
fi
grep -h "autotune\|captured\|start-up" "$out"/*.err 2>/dev/null | sed 's/^/  /' | head -n 20

stamp summary
python3 - "$out" <<'PY'
import json, pathlib, re, sys

out = pathlib.Path(sys.argv[1])


def load(name):
    try:
        return json.loads((out / name).read_text())
    except (OSError, ValueError):
        return None


check = (out / "check.txt").read_text().splitlines() if (out / "check.txt").exists() else []
print("(a) fast path vs torch reference")
for line in check:
    if line.startswith(("tiny", "builtin", "exit")):
        print("   ", re.sub(r" +\(\{.*\}\)", "", line))  # without the engine facts
print("(b) tierlm bench offline, 16 requests, input 128-512, output 32-64, dummy bf16")
print(f"    {'model':<26}{'out tok/s':>10}{'TTFT p50':>10}{'TPOT p50':>10}  graphs  backend")
for model in ("deepseek-v2-lite", "qwen3-30b-a3b"):
    r = load(f"offline-{model}.json")
    if r is None:
        print(f"    builtin:{model:<18}  failed (see offline-{model}.err)")
        continue
    t, info = r["tierlm"], r["engine_info"]
    print(f"    builtin:{model:<18}{t['output_tok_per_s']:>10.0f}{t['ttft_s']['p50']:>9.2f}s"
          f"{t['tpot_s']['p50'] * 1e3:>8.1f}ms  {str(info['cuda_graph']):<7} {info['attention_backend']}")
m = load("multiturn.json")
print("(c) tierlm bench multiturn builtin:deepseek-v2-lite")
if m is None:
    print("    failed (see multiturn.err)")
else:
    res = m["results"]
    pool = res[0]["kv_pool_tokens"]
    print(f"    working set {m['working_set_tokens']} tokens, device pool {pool} tokens "
          f"({m['working_set_tokens'] / pool:.1f}x), host ratio {m['hicache_ratio']}")
    print(f"    {'mode':<10}{'all tok/s':>10}{'L1 hit':>8}{'L2 hit':>8}   TTFT p50 per round (s)")
    for r in res:
        ttft = " ".join(f"{x['ttft_s']['p50']:.3f}" for x in r["rounds"])
        print(f"    {r['label']:<10}{r['total_tok_per_s']:>10.0f}{r['hit_rate']['L1']:>8.1%}"
              f"{r['hit_rate']['L2']:>8.1%}   {ttft}")
    if len(res) == 2:
        ratios = [b["ttft_s"]["p50"] / a["ttft_s"]["p50"] for a, b in zip(res[0]["rounds"], res[1]["rounds"])][1:]
        print(f"    +L2 / GPU-only TTFT p50, rounds 2+: {', '.join(f'{x:.2f}' for x in ratios)}; "
              f"throughput {res[1]['total_tok_per_s'] / res[0]['total_tok_per_s']:.2f}x")
PY
