"""`median_seconds`: the device time of a GPU operation, measured the one way every benchmark here uses."""
from __future__ import annotations

import statistics
from typing import Callable

import torch


def median_seconds(fn: Callable[[], object], iters: int = 5, warmup: int = 1) -> float:
    """Median seconds between CUDA events around `fn()` (queued on the current stream), after `warmup` calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def gqa_transfer(k, v, host, backend: str = "jit", **kw):
    """A page transfer over per-layer K/V lists and a typed `[pages, layers, 2, page_size, heads, dim]` host
    pool (the movers take byte regions and host bytes; the typed tensors stay usable for checks)."""
    from tierlm.kvcache.dma import page_mover

    regions, hb, sizes = gqa_bytes(k, v, host)
    return page_mover(backend, regions, hb, sizes, **kw)


def gqa_bytes(k, v, host):
    """(regions in page-first order, host bytes, regions per layer) of GQA pools."""
    import torch

    from tierlm.jit.kv_transfer import byte_pages

    pages = k[0].shape[0] // host.shape[3]
    regions = [byte_pages(t, pages) for pair in zip(k, v) for t in pair]
    return regions, host.view(torch.uint8).view(host.shape[0], -1), [2] * len(k)
