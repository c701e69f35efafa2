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
