"""How the start-up tuners time a launch and pick among launches, shared by the decode linears' tuners
(`linear_tune`) and the fused MoE's (`fused_moe_tune`).

A launch is timed as the engine runs it: replayed from a CUDA graph, so the host's launch work (which in a
captured step costs nothing) is not what is measured. Launches whose times lie within `TIE` of the fastest are
one tie, which the candidate listed first wins: such launches swap places from one tuning to the next, so
without the rule two cache roots of one machine get different plans and a workload's figures move with them
(docs/benchmarks.md, #20).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

TIE = 0.01
_CALLS = 20


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


def choose(timed: Sequence[tuple[Any, float]], bound_us: float = float("inf"), tie: float = TIE) -> Any:
    """The launch to run, from `(launch, us)` in the candidates' order: None (the other path) unless one takes
    under `bound_us`; else, of those under it within `tie` of the fastest, the one listed first."""
    under = [(cfg, us) for cfg, us in timed if us < bound_us]
    if not under:
        return None
    fastest = min(us for _, us in under)
    return next(cfg for cfg, us in under if us <= fastest * (1 + tie))
