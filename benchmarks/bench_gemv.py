"""GPU benchmark of the small-batch linear kernel (`tierlm.kernels.gemv`) against cuBLAS (`F.linear`).

For each weight shape of Qwen3-0.6B and Llama-3.1-8B (fused QKV, O, fused gate/up, down) and each batch of
1-8 rows: the error against a float32 reference, then the time per call inside a CUDA graph (as decode
steps run), cycling through enough weight copies that they do not stay in the 50 MB L2, for cuBLAS and
every launch variant (plain and pipelined). Prints the achieved weight-read GB/s and the best variant per
shape last; `--tuner` prints instead what the engine's tuner times and picks per shape, prologue and rows.
Usage: `PYTHONPATH=. python benchmarks/bench_gemv.py [--quick]` from the repo root; needs CUDA.
"""
from __future__ import annotations

import argparse
import itertools

import torch
import torch.nn.functional as F
import triton

from tierlm.kernels.gemv import GemvConfig, gemv
from tierlm.kernels.linear_tune import graph_time_us

SHAPES = {"qwen3-0.6b": ((4096, 1024), (1024, 2048), (6144, 1024), (1024, 3072)),
          "llama-3.1-8b": ((6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336))}

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer variants")
    ap.add_argument("--rows", default="1,2,4,8", help="comma list of batch sizes")
    ap.add_argument("--models", default=",".join(SHAPES), help="comma list of the models whose shapes to time")
    ap.add_argument("--tuner", action="store_true", help="instead: the engine's own tuning per shape (every "
                    "candidate with each fused prologue against the unfused torch path, rows 1, 2, 4) and its plan")
    args = ap.parse_args()
    print(f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}; triton {triton.__version__}")
    if args.tuner:
        return tuner_table(args.models.split(","))
    variants = [GemvConfig(n, k, w, p) for n, k, w, p in
                itertools.product((2, 4, 8, 16), (256, 512, 1024), (4, 8), (False, True))]
    if args.quick:
        variants = [GemvConfig(n, k, 4, p) for n, k, p in itertools.product((2, 4, 8), (512, 1024), (False, True))]
        variants += [GemvConfig(n, k, w, True, 2) for n, k, w in ((4, 512, 4), (8, 512, 4), (16, 512, 8), (8, 1024, 8))]
    rows_list = [int(r) for r in args.rows.split(",")]
    summary = []
    for model in args.models.split(","):
        for n, k in SHAPES[model]:
            nbytes = n * k * 2
            copies = max(1, -(-(200 << 20) // nbytes))
            ws = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02 for _ in range(copies)]
            for m in rows_list:
                x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
                ref = x.float() @ ws[0].float().T
                base = graph_time_us(lambda i: F.linear(x, ws[i]), copies)
                best = (base, "cublas")
                for var in variants:
                    err = (gemv(x, ws[0], config=var).float() - ref).abs().max().item()
                    if err > 0.05 * ref.abs().max().item():
                        print(f"{model} {n}x{k} m{m} {var.label()}: WRONG, max err {err:.3g}")
                        continue
                    us = graph_time_us(lambda i, var=var: gemv(x, ws[i], config=var), copies)
                    if us < best[0]:
                        best = (us, var.label())
                summary.append((model, n, k, m, base, nbytes / base / 1e3, best[0], nbytes / best[0] / 1e3, best[1]))
                print(summary[-1], flush=True)
            del ws
            torch.cuda.empty_cache()
    print(f"\n{'model':13s} {'N':>6} {'K':>6} {'M':>2} {'cublas us':>9} {'GB/s':>6} {'best us':>8} {'GB/s':>6}  best")
    for model, n, k, m, base, base_gbs, us, gbs, label in summary:
        print(f"{model:13s} {n:6d} {k:6d} {m:2d} {base:9.2f} {base_gbs:6.0f} {us:8.2f} {gbs:6.0f}  {label}")


def tuner_table(models: list[str]) -> None:
    """What `tune_gemv` times and picks for each shape, prologue and rows (`print_tuner_rows`)."""
    from tierlm.kernels.gemv_tune import tune_gemv

    print_tuner_header()
    for model in models:
        for n, k in SHAPES[model]:
            res = tune_gemv(n, k, ("plain", "rmsnorm", "silu_mul"), torch.bfloat16, torch.device("cuda"))
            print_tuner_rows(model, n, k, res, GemvConfig)
            torch.cuda.empty_cache()


def print_tuner_header() -> None:
    print(f"{'model':13s} {'N':>6} {'K':>6} {'prologue':9s} {'rows':>4} {'torch us':>9} {'unfused us':>11} "
          f"{'best us':>8}  {'best':22s} plan   (unfused: the prologue, then the plain plan's launch)")


def print_tuner_rows(model: str, n: int, k: int, res: dict, config_cls) -> dict:
    """Per prologue and rows of a tuner's result `res`: the torch path's microseconds, the unfused prologue
    then the plain plan's launch, the fastest candidate's, and the plan ("unfused": the layer runs the
    prologue, then its plain plan; "cuBLAS" for the plain prologue). Returns {(prologue, rows): us of the path
    the plan takes}."""
    taken = {}
    for prologue, buckets in res["plan"].items():
        for rows, cfg in buckets.items():
            times = {key.split("/")[2]: us for key, us in res["timings_us"].items()
                     if key.startswith(f"{prologue}/{rows}/")}
            unfused = next((us for label, us in times.items() if label.startswith("unfused+")), None)
            best = min(((us, label) for label, us in times.items()
                        if label != "torch" and not label.startswith("unfused+")), default=(float("nan"), "-"))
            plan = config_cls(**cfg).label() if cfg else ("cuBLAS" if prologue == "plain" else "unfused")
            taken[prologue, int(rows)] = (times[config_cls(**cfg).label()] if cfg else
                                          unfused if unfused is not None else times["torch"])
            unfused_text = f"{unfused:11.2f}" if unfused is not None else f"{'-':>11}"
            print(f"{model:13s} {n:6d} {k:6d} {prologue:9s} {rows:>4} {times['torch']:9.2f} {unfused_text} "
                  f"{best[0]:8.2f}  {best[1]:22s} {plan}", flush=True)
    return taken


if __name__ == "__main__":
    main()
