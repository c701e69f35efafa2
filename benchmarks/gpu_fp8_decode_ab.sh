#!/usr/bin/env bash
# Decode attention over an fp8 KV pool, this tree (A) against another checkout (B, e.g. `git archive COMMIT |
# tar -x -C DIR`) on one GPU. The kernel alone at two shapes, graph-replayed: every launch variant on A, the
# default launch on B, and A's default over a bf16 pool for scale; then A's GPU tests of the kernels and Triton
# backends over narrower pools (fp8, and fp16 under fp32). About 5 minutes.
# Usage: bash benchmarks/gpu_fp8_decode_ab.sh B_DIR [OUTDIR]
set -uo pipefail
source "$(dirname "$0")/ab_helpers.sh"  # ab_dirs, side_dir
ab_dirs "$1" "${2:-fp8-decode-ab}"
print_versions
kernel() {  # SIDE DTYPE [bench_attention args]: the decode kernel alone with SIDE's code
  local dir; dir=$(side_dir "$1")
  (cd "$dir" && PYTHONPATH=$dir timeout 150 python3 benchmarks/bench_attention.py --decode-shapes 256:512,64:2048 \
    --kv-dtype "$2" "${@:3}" 2>&1 | grep -v -i warn > "$out/kernel-$2-$1.txt")
  echo "== decode attention alone, KV $2, side $1"; tail -n 3 "$out/kernel-$2-$1.txt"
}
kernel A auto --default-only; kernel A fp8; kernel B fp8 --default-only
PYTHONPATH=$here timeout 240 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_kernels.py \
  tests/attention/test_triton_backend.py tests/attention/test_mla_triton.py -k "fp8 or fp16_pool" 2>&1 | tail -n 4
