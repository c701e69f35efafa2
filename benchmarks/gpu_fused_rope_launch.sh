#!/usr/bin/env bash
# Does the q/k norm and rotary inside decode attention (`decode_fused_rope`) gain or lose with the decode launch the
# start-up tuner picked? One cold run tunes a cache root (fusion off), two copies of it get the decode launch pinned
# to KV tile 128 / 2 stages and to tile 64 / 3 stages (the two the tuner chose on different machines, within 0.1% of
# each other in its own timing), then Qwen3-0.6B's offline workload (nano-vllm, dummy weights) runs with the fusion
# on for every decode step (1) and off (0) on each.
# About 4 minutes. Usage: bash benchmarks/gpu_fused_rope_launch.sh [OUTDIR]
set -uo pipefail
source "$(dirname "$0")/ab_helpers.sh"  # ab_dirs
ab_dirs . "${1:-fused-rope-launch}"
export PYTHONPATH=$here
root=$here/.cache-fused-rope-launch
run() {  # ROOT SETTING TAG
  TIERLM_CACHE_DIR=$1 timeout "${RUN_TIMEOUT:-120}" python3 benchmarks/with_attention_config.py "decode_fused_rope=$2" \
    -m tierlm bench offline --model builtin:qwen3-0.6b --load-format dummy --skip-tokenizer-init --json \
    > "$out/$3.json" 2> "$out/$3.err" || echo "$3 failed"
}
rm -rf "$root"*
run "$root" 0 cold
for launch in 128:2 64:3; do
  cp -r "$root" "$root-${launch%%:*}"
  python3 - "$root-${launch%%:*}" "$launch" <<'PY'
import json, pathlib, sys
block_n, stages = map(int, sys.argv[2].split(":"))
for path in pathlib.Path(sys.argv[1], "autotune", "triton_decode").glob("*.json"):
    body = json.loads(path.read_text())
    body["results"].update(decode_block_n=block_n, decode_num_stages=stages, decode_num_warps=4)
    path.write_text(json.dumps(body, indent=1, sort_keys=True))
PY
done
for launch in 128 64; do
  for setting in 1 0; do run "$root-$launch" "$setting" "tile$launch-rope$setting"; done
done
python3 benchmarks/show_tuned.py "$root"* > "$out/tuned.txt"
python3 benchmarks/offline_summary.py "$out"/*.json
