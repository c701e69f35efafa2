#!/usr/bin/env bash
# Where the offline workload's device time goes, on one GPU: the pass table of benchmarks/offline_steps.py and
# its kernels by total time (torch profiler), for the whole nano-vllm workload and for its prefill passes alone
# (every request answered by one token), then the kernels of a Llama-3.1-8B batch-1 decode step
# (benchmarks/profile_engine.py). About 5 minutes. Usage: bash benchmarks/gpu_offline_profile.sh [OUTDIR]
set -uo pipefail
out=${1:-offline-profile}
rows=${ROWS:-45}
mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TIERLM_CACHE_DIR=${TIERLM_CACHE_DIR:-$PWD/.cache-profile}
source "$(dirname "$0")/ab_helpers.sh"  # print_versions
print_versions
timeout 240 python3 benchmarks/offline_steps.py --torch-profile "$rows" > "$out/offline.txt" 2>&1 \
  || echo "offline failed (exit $?)"
timeout 150 python3 benchmarks/offline_steps.py --output-len 1 1 --torch-profile "$rows" > "$out/prefill.txt" 2>&1 \
  || echo "prefill failed (exit $?)"
if [ -z "${SKIP_8B:-}" ]; then
  timeout 200 python3 benchmarks/profile_engine.py --model builtin:llama-3.1-8b --batches 1 --prefill-len 0 \
    --torch-profile --profile-rows "$rows" > "$out/llama-b1.txt" 2>&1 || echo "llama failed (exit $?)"
fi
for f in offline prefill; do
  echo "== $f"; grep -v "^INFO" "$out/$f.txt" | grep -B1 -A12 "^passes"
  grep -A"$((rows + 4))" "^under the profiler" "$out/$f.txt" | cut -c1-160
done
[ -f "$out/llama-b1.txt" ] && { echo "== llama-b1"; tail -n "$((rows + 16))" "$out/llama-b1.txt" | cut -c1-160; }
