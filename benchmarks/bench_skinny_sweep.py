"""GPU sweep of the skinny linear kernel's launches at 64-256 rows (`tierlm.kernels.skinny_gemm`) against cuBLAS,
wider than the engine's candidate list: which weight-row tile, K tile, K splits and batch tile would beat cuBLAS
on a model's four decode shapes.

Each launch is timed as the tuner times it (`linear_tune.graph_time_us`: 20 calls inside a CUDA graph, weights
cycled so they come from HBM, consecutive calls overlapping under PDL as in a decode step) after a check
against cuBLAS. Prints per shape and rows: cuBLAS, the best of the engine's current candidates, the best of
the sweep; then one layer's four linears.
Usage: `PYTHONPATH=. python benchmarks/bench_skinny_sweep.py [--model qwen3-0.6b] [--rows 64,128,256]`; needs CUDA.
"""
from __future__ import annotations

import argparse
import itertools

import torch
import torch.nn.functional as F
import triton

from benchmarks.bench_gemv import SHAPES
from tierlm.kernels.linear_tune import check_close, graph_time_us, weight_copies
from tierlm.kernels.skinny_gemm import SkinnyConfig, skinny_gemm, split_counters
from tierlm.kernels.skinny_gemm_tune import CANDIDATES


def grid() -> list[SkinnyConfig]:
    tiles = ((64, 128, 4), (64, 64, 4), (128, 64, 8), (128, 128, 8), (128, 64, 4))
    return [SkinnyConfig(n, k, s, w, 4, block_m=m) for (n, k, w), s, m in itertools.product(tiles, (1, 2, 4),
                                                                                          (64, 128, 0))]


def time_launch(x, ws, copies, ref, n, cfg, dev):
    counters = split_counters(n, cfg, dev)
    try:
        check_close(skinny_gemm(x, ws[0], None, cfg, counters), ref)
        return graph_time_us(lambda i: skinny_gemm(x, ws[i], None, cfg, counters), copies)
    except Exception as e:  # noqa: BLE001 - a launch this GPU cannot build or run is left out
        print(f"    {cfg.label()}: not timed ({str(e)[:80]})")
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen3-0.6b")
    ap.add_argument("--rows", default="64,128,256")
    args = ap.parse_args()
    dev = torch.device("cuda")
    print(f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}; triton {triton.__version__}")
    gen = torch.Generator(device=dev).manual_seed(0)
    rows_list = [int(r) for r in args.rows.split(",")]
    layer = {r: [0.0, 0.0, 0.0] for r in rows_list}
    current = set(CANDIDATES)
    print("shape        rows  cuBLAS us  current best us (launch)          sweep best us (launch)       best/cuBLAS")
    for n, k in SHAPES[args.model]:
        ws, copies = weight_copies(n, k, torch.bfloat16, dev, gen)
        for rows in rows_list:
            x = (torch.randn(rows, k, generator=gen, device=dev) * 0.5).to(torch.bfloat16)
            ref = F.linear(x, ws[0])
            base = graph_time_us(lambda i: F.linear(x, ws[i]), copies)
            timed = {}
            for cfg in list(dict.fromkeys(list(CANDIDATES) + grid())):
                if cfg.block_m >= rows:
                    continue  # the same launch as the whole batch tile (the tuner skips it too)
                us = time_launch(x, ws, copies, ref, n, cfg, dev)
                if us is not None:
                    timed[cfg] = us
            cur = min((c for c in timed if c in current), key=timed.get)
            best = min(timed, key=timed.get)
            print(f"{n:5d}x{k:<5d} {rows:4d} {base:9.2f}  {timed[cur]:7.2f} ({cur.label():28s}) "
                  f"{timed[best]:7.2f} ({best.label():28s}) {timed[best] / base:5.2f}", flush=True)
            layer[rows][0] += base
            layer[rows][1] += timed[cur] if timed[cur] < 0.97 * base else base  # the tuner's margin
            layer[rows][2] += min(base, timed[best])
        del ws
        torch.cuda.empty_cache()
    print("one layer's four linears, us: rows, cuBLAS, the current plan, the sweep's best (cuBLAS where it wins)")
    for rows, (a, b, c) in layer.items():
        print(f"  {rows:4d} {a:8.2f} {b:8.2f} {c:8.2f}  {c / a:5.2f}")


if __name__ == "__main__":
    main()
