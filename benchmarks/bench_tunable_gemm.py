"""GPU benchmark: cuBLAS's default pick against PyTorch's TunableOp (`torch.cuda.tunable`, which times the
cuBLAS / cuBLASLt algorithms for each GEMM shape and keeps the fastest) on the decode-time linear shapes.

The decode projections of 65-256 rows run on cuBLAS, at several times their weight read (docs/benchmarks.md,
the offline workload); this measures whether letting PyTorch choose the algorithm per shape pays, before the
engine relies on it. For each weight shape of the named models and each batch size: microseconds per `F.linear`
inside a CUDA graph (weights cycled through HBM, `linear_tune.graph_time_us`), first with TunableOp off, then on
(tuned during the eager warm-up calls, before capture), the ratio, and the largest difference of the outputs.
Tuning results go to a CSV under `--out`. Usage: `PYTHONPATH=. python benchmarks/bench_tunable_gemm.py
[--models qwen3-0.6b] [--rows 8,32,128,256] [--out DIR]` from the repo root; needs CUDA.
"""
from __future__ import annotations

import argparse
import os

import torch
import torch.nn.functional as F

from benchmarks.bench_gemv import SHAPES
from tierlm.kernels.linear_tune import graph_time_us, weight_copies


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="qwen3-0.6b", help="comma list of the models whose shapes to time")
    ap.add_argument("--rows", default="8,16,32,64,128,256", help="comma list of batch sizes")
    ap.add_argument("--out", default="tunable-gemm", help="folder for TunableOp's results file")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    tunable = torch.cuda.tunable
    tunable.set_filename(os.path.join(args.out, "tunableop_results.csv"))
    tunable.set_max_tuning_duration(30)  # milliseconds per shape
    dev, gen = torch.device("cuda"), torch.Generator(device="cuda").manual_seed(0)
    rows_list = [int(r) for r in args.rows.split(",")]
    print(f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}")
    print(f"{'model':13s} {'N':>6} {'K':>6} {'rows':>4} {'cuBLAS us':>10} {'tuned us':>9} {'ratio':>6} {'max diff':>9}")
    for model in args.models.split(","):
        totals = {r: [0.0, 0.0] for r in rows_list}
        for n, k in SHAPES[model]:
            ws, copies = weight_copies(n, k, torch.bfloat16, dev, gen)
            for rows in rows_list:
                x = torch.randn(rows, k, generator=gen, device=dev).to(torch.bfloat16)
                tunable.enable(False)
                base_out = F.linear(x, ws[0])
                base = graph_time_us(lambda i: F.linear(x, ws[i]), copies)
                tunable.enable(True)
                tunable.tuning_enable(True)
                tuned_out = F.linear(x, ws[0])  # tunes this shape
                tuned = graph_time_us(lambda i: F.linear(x, ws[i]), copies)
                tunable.enable(False)
                diff = (tuned_out.float() - base_out.float()).abs().max().item()
                totals[rows][0] += base
                totals[rows][1] += tuned
                print(f"{model:13s} {n:6d} {k:6d} {rows:4d} {base:10.2f} {tuned:9.2f} {tuned / base:6.2f} {diff:9.3g}",
                      flush=True)
            del ws
            torch.cuda.empty_cache()
        print(f"{model}: the four shapes summed, us: rows, cuBLAS, TunableOp, ratio")
        for rows, (a, b) in totals.items():
            print(f"  {rows:4d} {a:8.2f} {b:8.2f} {b / a:6.2f}")
    print(f"TunableOp kept {len(tunable.get_results())} tuned GEMMs (written to {tunable.get_filename()} at exit)")


if __name__ == "__main__":
    main()
