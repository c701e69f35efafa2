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


def captured(fn: Callable[[], object]) -> tuple["torch.cuda.CUDAGraph", object]:
    """`fn()` captured in a CUDA graph after one warm-up call on a side stream: (the graph, the captured call's
    output, whose memory each replay rewrites)."""
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        fn()
    stream.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        out = fn()
    return graph, out


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


GAP_BUCKETS_US = (2, 5, 20, 100, 1000, float("inf"))


def device_gaps(prof, pairs: int = 12) -> dict:
    """How a torch profiler recording's device time splits into busy and idle: the span from the first
    device activity to the last, the union of its activities (kernels, copies, memsets; overlapping ones,
    as under programmatic dependent launch, counted once), the idle gaps between them by length, and the
    gaps of 2 us or more summed by the pair of activities around them (the one whose end opens the gap, the
    one that closes it): what the device waited between."""
    from torch.autograd import DeviceType

    spans = sorted((e.start_ns(), e.start_ns() + e.duration_ns(), e.name()) for e in
                   prof.profiler.kineto_results.events() if e.device_type() == DeviceType.CUDA and e.duration_ns() > 0)
    if not spans:
        return {"span_s": 0.0, "busy_s": 0.0, "gaps": [], "longest": [], "pairs": []}
    first = spans[0][0]
    busy, gaps, (cur_s, cur_e, cur_n) = 0, [], spans[0]  # gaps: (length ns, where it starts ns, before, after)
    for s, e, n in spans[1:]:
        if s > cur_e:
            busy += cur_e - cur_s
            gaps.append((s - cur_e, cur_e, cur_n, n))
            cur_s, cur_e, cur_n = s, e, n
        elif e > cur_e:
            cur_e, cur_n = e, n
    busy += cur_e - cur_s
    rows, lo = [], 0.0
    for hi in GAP_BUCKETS_US:
        sel = [g[0] for g in gaps if lo * 1e3 <= g[0] < hi * 1e3]
        rows.append({"from_us": lo, "to_us": hi, "count": len(sel), "seconds": sum(sel) / 1e9})
        lo = hi
    longest = [{"us": g[0] / 1e3, "at_s": (g[1] - first) / 1e9} for g in sorted(gaps, reverse=True)[:10]]
    by_pair: dict[tuple[str, str], list] = {}
    for g, _, before, after in gaps:
        if g >= 2000:
            acc = by_pair.setdefault((before, after), [0, 0])
            acc[0], acc[1] = acc[0] + 1, acc[1] + g
    top = sorted(by_pair.items(), key=lambda kv: -kv[1][1])[:pairs]
    return {"span_s": (cur_e - first) / 1e9, "busy_s": busy / 1e9, "gaps": rows, "longest": longest,
            "pairs": [{"before": b, "after": a, "count": c, "seconds": t / 1e9} for (b, a), (c, t) in top]}


def step_timeline(starts_ms: list[float], ends_ms: list[float], run_ms: float) -> dict:
    """Where a run's device time went between engine steps, from CUDA events: `starts_ms[k]` / `ends_ms[k]`
    are recorded on the stream when step k's launch begins / ends and `run_ms` when the run ends (all relative
    to an event recorded when it began, on an idle stream). A step's start event completes once the stream
    has finished the step before *and* the host has queued it, so the time from one step's end to the next's
    start is the device waiting for the host; a step's span includes any wait inside its own launch."""
    between = sum(max(0.0, s - e) for e, s in zip(ends_ms, starts_ms[1:]))
    inside = sum(e - s for s, e in zip(starts_ms, ends_ms))
    return {"run_s": run_ms / 1e3, "before_s": (starts_ms[0] if starts_ms else run_ms) / 1e3,
            "steps_s": inside / 1e3, "between_s": between / 1e3,
            "after_s": (run_ms - ends_ms[-1]) / 1e3 if ends_ms else 0.0,
            "waits_over_50us": sum(1 for e, s in zip(ends_ms, starts_ms[1:]) if s - e > 0.05)}


def print_device_gaps(gaps: dict) -> None:
    """`device_gaps` as a short table."""
    print(f"device span {gaps['span_s']:.3f} s, busy {gaps['busy_s']:.3f} s; idle gaps by length:")
    for r in gaps["gaps"]:
        print(f"  {r['from_us']:>6g}-{r['to_us']:<6g} us {r['count']:>9} gaps {r['seconds']:>9.4f} s")
    if gaps.get("longest"):
        print("  longest: " + ", ".join(f"{g['us']:.0f} us at {g['at_s']:.3f} s" for g in gaps["longest"]))
    if gaps.get("pairs"):
        print("gaps of 2 us or more by the activities around them: count, seconds, before -> after")
        for p in gaps["pairs"]:
            print(f"  {p['count']:>7} {p['seconds']:>8.4f}  {p['before'][:60]} -> {p['after'][:60]}")
