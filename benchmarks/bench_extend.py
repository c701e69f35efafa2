"""GPU benchmark of the extend (prefill) attention kernel at long prompts: TFLOP/s and error vs float32.

Shapes are Qwen3-0.6B's attention (16 query heads, 8 KV heads, head_dim 128, bf16) with the engine's paged
KV pool; FLOPs count the causal half of the new block only. Each launch variant is checked against a
float32 torch reference before it is timed; the table comes last.
Usage: `PYTHONPATH=. python benchmarks/bench_extend.py [--variants JSON]` from the repo root; needs CUDA.
"""
from __future__ import annotations

import argparse
import json

import torch
import triton

from benchmarks.bench_attention import extend_bench

SHAPES = ((1, 0, 8192), (1, 0, 2048), (4, 2048, 2048), (1, 16384, 512))  # batch, cached prefix, new tokens
DEFAULT_VARIANTS = ({},)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default=None,
                    help="JSON list of keyword sets for extend_attention (default: its own defaults only).")
    args = ap.parse_args()
    variants = json.loads(args.variants) if args.variants else list(DEFAULT_VARIANTS)
    print(f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}; triton {triton.__version__}")
    gen = torch.Generator().manual_seed(0)
    rows = []
    for batch, prefix, ext in SHAPES:
        for var, err, us, tflops in extend_bench(batch, prefix, ext, gen, variants):
            rows.append((batch, prefix, ext, json.dumps(var), us, tflops, err))
            torch.cuda.empty_cache()
    print(f"\n{'batch':>5} {'prefix':>6} {'new':>6} {'us':>9} {'TFLOP/s':>8} {'err':>8}  variant")
    for batch, prefix, ext, var, us, tflops, err in rows:
        print(f"{batch:5d} {prefix:6d} {ext:6d} {us:9.1f} {tflops:8.1f} {err:8.1e}  {var}")


if __name__ == "__main__":
    main()
