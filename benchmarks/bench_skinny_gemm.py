"""GPU benchmark of the skinny linear kernel (`tierlm.kernels.skinny_gemm`, 5-256 rows) against cuBLAS.

For each weight shape of the named models (fused QKV, O, fused gate/up, down) it runs the engine's own tuning
(`skinny_gemm_tune.tune_skinny`: cuBLAS and every candidate launch per rows bucket, inside a CUDA graph with
the weights from HBM, each call after an RMSNorm), checks the chosen launches against a float32 matmul, and
prints the tuner's table (`bench_gemv.print_tuner_rows`). Then per rows the sum over a model's four shapes (one
layer's linears, each with its norm), cuBLAS against the plan.
Usage: `PYTHONPATH=. python benchmarks/bench_skinny_gemm.py [--models qwen3-0.6b,llama-3.1-8b]` from the repo
root; needs CUDA.
"""
from __future__ import annotations

import argparse
import time

import torch
import triton

from benchmarks.bench_gemv import SHAPES, print_tuner_header, print_tuner_rows
from tierlm.kernels.skinny_gemm import SkinnyConfig, skinny_gemm, split_counters
from tierlm.kernels.skinny_gemm_tune import BUCKETS, tune_skinny


def check_chosen(n: int, k: int, plan: dict, dev: torch.device) -> None:
    for rows, cfg in plan["plain"].items():
        if cfg is not None:
            c = SkinnyConfig(**cfg)
            x = torch.randn(int(rows), k, device=dev, dtype=torch.bfloat16)
            w = torch.randn(n, k, device=dev, dtype=torch.bfloat16) * 0.02
            ref = x.float() @ w.float().T
            err = (skinny_gemm(x, w, None, c, split_counters(n, c, dev)).float() - ref).abs().max().item()
            assert err <= 0.02 * ref.abs().max().item(), (n, k, rows, c.label(), err)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="qwen3-0.6b", help="comma list of the models whose shapes to time")
    args = ap.parse_args()
    print(f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}; triton {triton.__version__}")
    dev = torch.device("cuda")
    for model in args.models.split(","):
        layer = {rows: [0.0, 0.0] for rows in BUCKETS}
        print()
        print_tuner_header()
        for n, k in SHAPES[model]:
            t0 = time.perf_counter()
            out = tune_skinny(n, k, torch.bfloat16, dev)
            took = time.perf_counter() - t0
            check_chosen(n, k, out["plan"], dev)
            taken = print_tuner_rows(model, n, k, out, SkinnyConfig)
            for rows in BUCKETS:
                layer[rows][0] += out["timings_us"][f"plain/{rows}/torch"]
                layer[rows][1] += taken["plain", rows]
            print(f"  ({n}x{k} tuned in {took:.1f} s)")
            torch.cuda.empty_cache()
        print(f"{model} one layer's four linears, us: rows, cuBLAS, the plan, ratio")
        for rows, (a, b) in layer.items():
            print(f"  {rows:4d} {a:8.2f} {b:8.2f}  {b / a:5.2f}")


if __name__ == "__main__":
    main()
