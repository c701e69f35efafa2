"""GPU benchmark of the extend (prefill) attention kernel at long prompts: TFLOP/s and error vs float32.

Shapes are Qwen3-0.6B's attention (16 query heads, 8 KV heads, head_dim 128, bf16) with the engine's paged
KV pool; FLOPs count the causal half of the new block only. Each launch variant is checked against a
float32 torch reference before it is timed; a variant that fails to compile or run is reported and skipped.
The table comes last, then the best variant per shape.

Usage (from the repo root; needs CUDA):
  PYTHONPATH=. python benchmarks/bench_extend.py                      # extend_attention's defaults only
  PYTHONPATH=. python benchmarks/bench_extend.py --variants '[{}, {"num_stages": 2}]'
  PYTHONPATH=. python benchmarks/bench_extend.py --sweep              # SWEEP: the knobs' ablations and tiles
  PYTHONPATH=. python benchmarks/bench_extend.py --sweep --shapes 1:0:8192   # one shape (batch:prefix:new)
  PYTHONPATH=. python benchmarks/bench_extend.py --graph --shapes 64:0:24 --variants '[{}, {"order": "packed"}]'
  # the packed order with its work table built once (as a captured pass does), not in every timed call:
  PYTHONPATH=. python benchmarks/bench_extend.py --graph --variants '[{"order": "packed", "prebuilt_tiles": true}]'
  PYTHONPATH=. python benchmarks/bench_extend.py --kv-dtype fp8 --shapes 4:2048:2048,1:16384:512  # fp8 pool
"""
from __future__ import annotations

import argparse
import json

import torch
import triton

from benchmarks.bench_attention import extend_bench

SHAPES = ((1, 0, 8192), (1, 0, 2048), (4, 2048, 2048), (1, 16384, 512))  # batch, cached prefix, new tokens
DEFAULT_VARIANTS = ({},)
LEGACY = {"causal_split": False, "order": "request", "tma": False}  # the kernel before the knobs existed
# Registers and shared memory per program decide how many fit on an SM (H100/H200: 64K registers, 228 KB):
# 64-row tiles of 4 warps fit two per SM up to 3 stages of 64 keys; 128-row tiles of 8 warps fit two per SM
# only with 32-key tiles and maxnreg 128; `pack_heads: 2` stacks the GQA pair into 128 rows per K/V tile.
SWEEP = (
    LEGACY,
    {},
    {"tma": False},
    {"order": "request"},
    {"order": "kv_local"},
    {"prescale_q": True},
    {"num_stages": 2},
    {"block_n": 32, "num_stages": 4},
    {"block_n": 32, "num_stages": 3, "maxnreg": 168},
    {"pack_heads": 2, "block_m": 32},
    {"pack_heads": 2, "num_warps": 8, "num_stages": 2},
    {"pack_heads": 2, "num_warps": 8, "num_stages": 3},
    {"pack_heads": 2, "block_n": 32, "num_warps": 8, "num_stages": 3, "maxnreg": 128},
    {"pack_heads": 2, "block_n": 32, "num_warps": 8, "num_stages": 4, "maxnreg": 128},
    {"pack_heads": 2, "block_n": 128, "num_warps": 8, "num_stages": 2},
    {"block_m": 128, "num_warps": 8, "num_stages": 2},
    {"block_m": 128, "num_warps": 8, "num_stages": 3},
    {"block_m": 128, "block_n": 32, "num_warps": 8, "num_stages": 3, "maxnreg": 128},
    {"block_m": 128, "block_n": 128, "num_warps": 8, "num_stages": 2},
)
BAD_ERR = 0.1  # bf16 output vs a float32 reference stays near 1e-2; far above that the variant is wrong


def parse_shapes(text: str) -> list[tuple[int, int, int]]:
    """`B:P:N[,B:P:N...]` -> [(batch, prefix, new)]."""
    try:
        shapes = [tuple(int(x) for x in part.split(":")) for part in text.split(",")]
    except ValueError:
        shapes = []
    if not shapes or any(len(s) != 3 or s[0] < 1 or s[1] < 0 or s[2] < 1 for s in shapes):
        raise SystemExit(f"--shapes: expected batch:prefix:new[,...] with batch, new >= 1, got {text!r}")
    return shapes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default=None,
                    help="JSON list of keyword sets for extend_attention (default: its own defaults only).")
    ap.add_argument("--sweep", action="store_true", help="time the SWEEP list (after any --variants)")
    ap.add_argument("--shapes", default=None, help="batch:prefix:new[,...] instead of the default shapes")
    ap.add_argument("--graph", action="store_true",
                    help="time replays of each launch captured in a CUDA graph: the device's time alone (short "
                         "launches otherwise measure the host's launch)")
    ap.add_argument("--kv-dtype", choices=("auto", "fp8"), default="auto",
                    help="the pool's element type (auto: bf16; fp8: e4m3, as --kv-cache-dtype fp8)")
    args = ap.parse_args()
    variants = json.loads(args.variants) if args.variants else ([] if args.sweep else list(DEFAULT_VARIANTS))
    variants += [dict(v) for v in SWEEP] if args.sweep else []
    shapes = parse_shapes(args.shapes) if args.shapes else list(SHAPES)
    print(f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}; triton {triton.__version__}")
    gen = torch.Generator().manual_seed(0)
    rows = []
    for batch, prefix, ext in shapes:
        for var in variants:
            try:
                kv_dtype = torch.float8_e4m3fn if args.kv_dtype == "fp8" else torch.bfloat16
                for _, err, us, tflops in extend_bench(batch, prefix, ext, gen, [var], kv_dtype, args.graph):
                    rows.append((batch, prefix, ext, json.dumps(var), us, tflops, err))
            except Exception as exc:  # noqa: BLE001 - a variant that fails to compile or run is reported
                print(f"{batch}:{prefix}:{ext} {json.dumps(var)} failed: {type(exc).__name__}: {str(exc)[:200]}")
            torch.cuda.empty_cache()
    print(f"\n{'batch':>5} {'prefix':>6} {'new':>6} {'us':>9} {'TFLOP/s':>8} {'err':>8}  variant")
    for batch, prefix, ext, var, us, tflops, err in rows:
        flag = "" if err <= BAD_ERR else "  WRONG"  # NaN too
        print(f"{batch:5d} {prefix:6d} {ext:6d} {us:9.1f} {tflops:8.1f} {err:8.1e}  {var}{flag}")
    print("\nbest per shape:")
    for batch, prefix, ext in shapes:
        ok = [r for r in rows if r[:3] == (batch, prefix, ext) and r[6] <= BAD_ERR]
        if ok:
            best = max(ok, key=lambda r: r[5])
            print(f"{batch}:{prefix}:{ext}  {best[5]:.1f} TFLOP/s  {best[3]}")


if __name__ == "__main__":
    main()
