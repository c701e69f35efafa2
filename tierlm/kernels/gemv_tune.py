"""Which small-batch linear runs each weight shape: cuBLAS or `gemv` with a tuned launch, per batch bucket.

Tuned once per (device, dtype, weight shape) on random data and kept in the cache root's autotune store
(`autotune/gemv/<fingerprint>.json`). Each candidate is timed inside a CUDA graph, as decode steps run it,
cycling through enough weight copies that the weights come from HBM and not from L2. A bucket keeps cuBLAS
unless a candidate beats it by `MARGIN`, so turning the kernel on never makes a shape slower than its
timing said.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Callable, Dict, Mapping, Optional

import torch
import torch.nn.functional as F

from tierlm.kernels.gemv import MAX_ROWS, GemvConfig, gemv

logger = logging.getLogger(__name__)
KERNEL = "gemv"
BUCKETS = (1, 2, 4, 8)  # rows are rounded up to one of these; the kernel pads to a power of two anyway
CANDIDATES = tuple(GemvConfig(n, k, 4) for n in (2, 4, 8, 16) for k in (512, 1024))
MARGIN = 0.97  # a candidate must take at most this fraction of cuBLAS's time
_CALLS = 20
_WEIGHT_BYTES = 160 << 20  # over three times the L2 of current data-centre GPUs

GemvPlan = Mapping[int, Optional[GemvConfig]]  # rows bucket -> launch (None: cuBLAS)


def bucket_of(rows: int) -> int:
    """The bucket whose plan serves `rows` rows (0 when above the largest: cuBLAS)."""
    for b in BUCKETS:
        if rows <= b:
            return b
    return 0


def graph_time_us(fn: Callable[[int], object], copies: int) -> float:
    """Median microseconds per call of `fn(i)`, replayed from a CUDA graph over `copies` inputs."""
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        for i in range(2):
            fn(i % copies)
    stream.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        for i in range(_CALLS):
            fn(i % copies)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(5):
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / _CALLS)
    return sorted(times)[len(times) // 2]


def tune_gemv(n: int, k: int, dtype: torch.dtype, device: torch.device) -> Dict[str, object]:
    """Time cuBLAS and every candidate for each rows bucket; the winners, with all timings."""
    gen = torch.Generator(device=device).manual_seed(0)
    copies = max(1, -(-_WEIGHT_BYTES // (n * k * torch.finfo(dtype).bits // 8)))
    ws = [(torch.randn(n, k, generator=gen, device=device) * 0.02).to(dtype) for _ in range(copies)]
    plan, timings = {}, {}
    for rows in BUCKETS:
        x = torch.randn(rows, k, generator=gen, device=device).to(dtype)
        best_us = graph_time_us(lambda i: F.linear(x, ws[i]), copies)
        timings[f"{rows}/cublas"] = round(best_us, 2)
        best_us *= MARGIN
        plan[str(rows)] = None
        for cfg in CANDIDATES:
            us = graph_time_us(lambda i, cfg=cfg: gemv(x, ws[i], None, cfg), copies)
            timings[f"{rows}/{cfg.label()}"] = round(us, 2)
            if us < best_us:
                best_us, plan[str(rows)] = us, dataclasses.asdict(cfg)
    del ws
    logger.info("autotune %s %dx%d: %s", KERNEL, n, k, {r: (GemvConfig(**c).label() if c else "cublas")
                                                         for r, c in plan.items()})
    return {"plan": plan, "timings_us": timings}


def tuned_plan(n: int, k: int, dtype: torch.dtype, device: torch.device) -> GemvPlan:
    """The plan of an `n x k` weight from the autotune store (tuning it once if missing)."""
    from tierlm.cachedir import AutotuneStore

    factors = {"device": torch.cuda.get_device_name(device), "dtype": str(dtype).replace("torch.", ""),
               "n": n, "k": k, "max_rows": MAX_ROWS, "buckets": list(BUCKETS),
               "candidates": [dataclasses.astuple(c) for c in CANDIDATES], "margin": MARGIN}
    results = AutotuneStore().get_or_tune(KERNEL, factors, lambda: tune_gemv(n, k, dtype, device))
    return {int(rows): (GemvConfig(**cfg) if cfg else None) for rows, cfg in results["plan"].items()}
