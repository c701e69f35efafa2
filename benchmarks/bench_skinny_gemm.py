"""GPU benchmark of the skinny linear kernel (`tierlm.kernels.skinny_gemm`, 5-256 rows) against cuBLAS.

For each weight shape of the named models (fused QKV, O, fused gate/up, down) it runs the engine's own
tuning (`skinny_gemm_tune.tune_skinny`: every candidate launch and cuBLAS, per rows bucket, inside a CUDA
graph with the weights from HBM), checks the winning launches against a float32 matmul, and prints per
shape and rows: cuBLAS us, the best launch us and its label, the ratio, and the best launch without and
with the L2 prefetch. Also the sum over a model's four
shapes per rows (one layer's linears). Usage: `PYTHONPATH=. python benchmarks/bench_skinny_gemm.py
[--models qwen3-0.6b,llama-3.1-8b]` from the repo root; needs CUDA.
"""
from __future__ import annotations

import argparse
import time

import torch
import triton

from benchmarks.bench_gemv import SHAPES
from tierlm.kernels.skinny_gemm import SkinnyConfig, skinny_gemm, split_counters
from tierlm.kernels.skinny_gemm_tune import BUCKETS, tune_skinny


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="qwen3-0.6b", help="comma list of the models whose shapes to time")
    args = ap.parse_args()
    print(f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}; triton {triton.__version__}")
    dev = torch.device("cuda")
    for model in args.models.split(","):
        layer = {rows: [0.0, 0.0] for rows in BUCKETS}
        print(f"\n{model}: shape, rows, cuBLAS us, best us, launch, best/cuBLAS")
        for n, k in SHAPES[model]:
            t0 = time.perf_counter()
            out = tune_skinny(n, k, torch.bfloat16, dev)
            took = time.perf_counter() - t0
            timings = out["timings_us"]
            for rows in BUCKETS:
                torch_us = timings[f"{rows}/torch"]
                mine = {key.split("/", 1)[1]: us for key, us in timings.items()
                        if key.startswith(f"{rows}/") and not key.endswith("/torch")}
                label, best = min(mine.items(), key=lambda kv: kv[1]) if mine else ("-", float("nan"))
                cfg = out["plan"][str(rows)]
                if cfg is not None:  # the chosen launch against a float32 reference
                    c = SkinnyConfig(**cfg)
                    x = torch.randn(rows, k, device=dev, dtype=torch.bfloat16)
                    w = torch.randn(n, k, device=dev, dtype=torch.bfloat16) * 0.02
                    ref = x.float() @ w.float().T
                    err = (skinny_gemm(x, w, None, c, split_counters(n, c, dev)).float() - ref).abs().max().item()
                    assert err <= 0.02 * ref.abs().max().item(), (model, n, k, rows, c.label(), err)
                layer[rows][0] += torch_us
                layer[rows][1] += min(torch_us, best) if cfg is not None else torch_us
                no_pf = min((us for lab, us in mine.items() if not lab.endswith(" pf")), default=float("nan"))
                pf = min((us for lab, us in mine.items() if lab.endswith(" pf")), default=float("nan"))
                print(f"  {n}x{k:<6} {rows:4d} {torch_us:8.2f} {best:8.2f}  {label:27s} {best / torch_us:5.2f}"
                      f"  without/with L2 prefetch {no_pf:6.2f} / {pf:6.2f}{'  chosen' if cfg is not None else ''}")
            print(f"  ({n}x{k} tuned in {took:.1f} s)")
        print(f"{model} one layer's four linears, us: rows, cuBLAS, with the plan")
        for rows, (a, b) in layer.items():
            print(f"  {rows:4d} {a:8.2f} {b:8.2f}  {b / a:5.2f}")


if __name__ == "__main__":
    main()
