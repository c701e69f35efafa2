"""GPU sweep of the skinny linear kernel's launches (`tierlm.kernels.skinny_gemm`) against cuBLAS, wider than
the engine's candidate list: which weight-row tile, K tile, K splits and batch tile would beat cuBLAS on a
model's four decode shapes; with `--tma` every launch also with its weight tiles brought in by the Tensor
Memory Accelerator (`SkinnyConfig.tma`), and below 5 rows also the engine's small-batch GEMV (its tuner's
candidates), so batch 1 of Llama-3.1-8B can be compared across all three.

Each launch is timed as the tuner times it (`linear_tune.graph_time_us`: 20 calls inside a CUDA graph, weights
cycled so they come from HBM, consecutive calls overlapping under PDL as in a decode step) after a check
against cuBLAS. Prints per shape and rows: cuBLAS, the best GEMV (below 5 rows), the best of the engine's
current candidates, the best of the sweep with pointer loads and with TMA (each with its weight-read TB/s);
then one layer's four linears.
Usage: `PYTHONPATH=. python benchmarks/bench_skinny_sweep.py [--model qwen3-0.6b] [--rows 64,128,256] [--tma]`;
needs CUDA.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools

import torch
import torch.nn.functional as F
import triton

from benchmarks.bench_gemv import SHAPES
from tierlm.kernels.gemv import gemv
from tierlm.kernels.gemv_tune import CANDIDATES as GEMV_CANDIDATES
from tierlm.kernels.linear_tune import check_close, graph_time_us, weight_copies
from tierlm.kernels.skinny_gemm import MIN_ROWS, SkinnyConfig, skinny_gemm, split_counters
from tierlm.kernels.skinny_gemm_tune import CANDIDATES


def grid(rows: int) -> list[SkinnyConfig]:
    """The launches swept at `rows` rows: batch tiles only where the batch spans several, more K splits and
    narrower weight tiles at a few rows (where the output tiles alone leave SMs idle)."""
    if rows < MIN_ROWS:
        tiles = ((32, 256, 4), (64, 128, 4), (64, 256, 4), (128, 128, 8), (128, 64, 4))
        return [SkinnyConfig(n, k, s, w, 4) for (n, k, w), s in itertools.product(tiles, (1, 2, 4, 8))]
    tiles = ((64, 128, 4), (64, 64, 4), (128, 64, 8), (128, 128, 8), (128, 64, 4))
    return [SkinnyConfig(n, k, s, w, 4, block_m=m) for (n, k, w), s, m in itertools.product(tiles, (1, 2, 4),
                                                                                          (64, 128, 0))]


def time_launch(fn, ws, copies, ref, label):
    """Microseconds per call of `fn(weight)` as the tuner times it, after its check; None where the launch
    cannot build, run or match cuBLAS on this GPU."""
    try:
        check_close(fn(ws[0]), ref)
        return graph_time_us(lambda i: fn(ws[i]), copies)
    except Exception as e:  # noqa: BLE001 - a launch this GPU cannot build or run is left out
        print(f"    {label}: not timed ({str(e)[:80]})")
        return None


def best_of(timed: dict, keys) -> tuple[float, str]:
    got = [(timed[k], k.label()) for k in keys if k in timed]
    return min(got) if got else (float("nan"), "-")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen3-0.6b", choices=sorted(SHAPES))
    ap.add_argument("--rows", default="64,128,256", help="comma list of batch sizes, 1-256")
    ap.add_argument("--tma", action="store_true", help="also time every launch with `tma=True`")
    args = ap.parse_args()
    dev = torch.device("cuda")
    print(f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}; triton {triton.__version__}")
    gen = torch.Generator(device=dev).manual_seed(0)
    rows_list = [int(r) for r in args.rows.split(",")]
    kinds = ("cuBLAS", "GEMV", "current", "pointer", "tma")
    layer = {r: dict.fromkeys(kinds, 0.0) for r in rows_list}
    current = set(CANDIDATES)
    print("shape        rows  cuBLAS us  GEMV us  current us  pointer best us (launch)        "
          "tma best us (launch)            TB/s: cuBLAS / best")
    for n, k in SHAPES[args.model]:
        ws, copies = weight_copies(n, k, torch.bfloat16, dev, gen)
        nbytes = n * k * 2
        for rows in rows_list:
            x = (torch.randn(rows, k, generator=gen, device=dev) * 0.5).to(torch.bfloat16)
            ref = F.linear(x, ws[0])
            base = graph_time_us(lambda i: F.linear(x, ws[i]), copies)
            timed, gemv_us = {}, (float("nan"), "-")
            if rows < MIN_ROWS:
                g = {c: time_launch(lambda w, c=c: gemv(x, w, config=c), ws, copies, ref, c.label())
                     for c in GEMV_CANDIDATES}
                gemv_us = min(((us, c.label()) for c, us in g.items() if us is not None), default=gemv_us)
            launches = [c for c in dict.fromkeys(list(CANDIDATES) + grid(rows)) if not c.block_m or c.block_m < rows]
            if args.tma:
                launches += [dataclasses.replace(c, tma=True) for c in launches]
            for cfg in launches:
                counters = split_counters(n, cfg, dev)
                us = time_launch(lambda w, cfg=cfg, cn=counters: skinny_gemm(x, w, None, cfg, cn), ws, copies, ref,
                                 cfg.label())
                if us is not None:
                    timed[cfg] = us
            cur = best_of(timed, current)
            ptr = best_of(timed, [c for c in timed if not c.tma])
            tma = best_of(timed, [c for c in timed if c.tma])
            best = min(v for v in (ptr[0], tma[0], gemv_us[0]) if v == v)
            print(f"{n:5d}x{k:<5d} {rows:4d} {base:9.2f} {gemv_us[0]:8.2f} {cur[0]:10.2f}  "
                  f"{ptr[0]:7.2f} ({ptr[1]:26s}) {tma[0]:7.2f} ({tma[1]:26s}) "
                  f"{nbytes / base / 1e6:5.2f} / {nbytes / best / 1e6:5.2f}", flush=True)
            for kind, us in zip(kinds, (base, gemv_us[0], cur[0], ptr[0], tma[0])):
                layer[rows][kind] += min(base, us) if us == us else base  # cuBLAS where the kernel loses
        del ws
        torch.cuda.empty_cache()
    print("one layer's four linears, us, each kernel kind (cuBLAS where it wins): rows, " + ", ".join(kinds))
    for rows, sums in layer.items():
        print(f"  {rows:4d} " + " ".join(f"{sums[kind]:8.2f}" for kind in kinds))


if __name__ == "__main__":
    main()
