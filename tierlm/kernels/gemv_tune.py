"""Which small-batch linear runs each weight shape: cuBLAS or `gemv` with a tuned launch, per batch bucket.

Tuned once per (device, dtype, weight shape) on random data by `tierlm.kernels.linear_tune` (every launch
inside a CUDA graph with the weights from HBM, checked against the torch path, chosen only by `MARGIN` over
every unfused path, near-ties to the launch listed first) and kept in the cache root's autotune store
(`autotune/gemv/<fingerprint>.json`). The list's order breaks ties: plain reads before pipelined ones, and the
wide-tile launches, added last, lose any tie.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Mapping, Optional

import torch

from tierlm.kernels.gemv import MAX_ROWS, GemvConfig, gemv, rmsnorm_gemv, silu_mul_gemv
from tierlm.kernels.launch import next_power_of_2
from tierlm.kernels.linear_tune import EPS, MARGIN, TOLERANCE, LinearKernels, tune_linear
from tierlm.kernels.tune_timing import TIE

KERNEL = "gemv"
# rows are rounded up to one of these (the kernel pads to a power of two anyway). At 8 rows cuBLAS won on an
# H200 for every Qwen3-0.6B and Llama-3.1-8B shape (bare GEMV) and every Qwen3-0.6B prologue, so 5-8 rows go
# to the skinny GEMM or cuBLAS.
BUCKETS = (1, 2, 4)
# The last two read a row of up to 2,048 columns in one tile (on an H100 the fastest reads of Qwen3-0.6B's O weight,
# 1024 x 2048, alone: benchmarks/bench_gemv_window.py).
CANDIDATES = (tuple(GemvConfig(n, k, 4) for n, k in ((2, 1024), (4, 1024), (8, 1024), (4, 512)))
              + tuple(GemvConfig(n, k, 4, True) for n, k in ((2, 1024), (4, 512), (4, 1024), (8, 512)))
              + tuple(GemvConfig(n, k, w, True, 2) for n, k, w in ((4, 512, 4), (8, 512, 4), (16, 512, 8)))
              + tuple(GemvConfig(n, 2048, 4) for n in (1, 2)))
KERNELS = LinearKernels(plain=lambda x, w, c: gemv(x, w, None, c),
                        rmsnorm=lambda x, res, nw, w, c: rmsnorm_gemv(x, res, nw, EPS, w, None, c)[0],
                        silu_mul=lambda gu, w, c: silu_mul_gemv(gu, w, c))

GemvPlan = Mapping[str, Mapping[int, Optional[GemvConfig]]]  # prologue -> rows bucket -> launch (None: cuBLAS)


def bucket_of(rows: int) -> int:
    """The bucket whose plan serves `rows` rows (0 when above the largest: another path)."""
    for b in BUCKETS:
        if rows <= b:
            return b
    return 0


def tune_gemv(n: int, k: int, prologues: tuple, dtype: torch.dtype, device: torch.device) -> Dict[str, object]:
    """The plan of an `n x k` weight read through `prologues`, timed now (see `linear_tune.tune_linear`)."""
    return tune_linear(KERNEL, n, k, prologues, dtype, device, BUCKETS, CANDIDATES, KERNELS,
                       skip=lambda cfg, rows: too_wide(cfg, k))


def too_wide(cfg: GemvConfig, k: int) -> bool:
    """Whether `cfg` is one of the wide-tile launches (K tile over 1,024) and its tile is wider than a row of `k`
    columns needs (half of it or more masked off): such a launch is not timed."""
    return cfg.block_k > max(next_power_of_2(k), 1024)


def tuned_plan(n: int, k: int, prologues: tuple, dtype: torch.dtype, device: torch.device) -> GemvPlan:
    """The plan of an `n x k` weight read through `prologues` from the autotune store (tuned once if missing)."""
    from tierlm.cachedir import AutotuneStore

    factors = {"device": torch.cuda.get_device_name(device), "dtype": str(dtype).replace("torch.", ""),
               "n": n, "k": k, "prologues": list(prologues), "max_rows": MAX_ROWS, "buckets": list(BUCKETS),
               "candidates": [dataclasses.astuple(c) for c in CANDIDATES],
               "skipped": "K tile over 1024 and over K's power of 2", "margin": MARGIN,
               "reference": "the better of prologue + cuBLAS and prologue + the plain plan",
               "checked": TOLERANCE, "tie": TIE}
    results = AutotuneStore().get_or_tune(KERNEL, factors, lambda: tune_gemv(n, k, prologues, dtype, device))
    return {p: {int(rows): (GemvConfig(**cfg) if cfg else None) for rows, cfg in b.items()}
            for p, b in results["plan"].items()}
