"""What a pause costs outside the engine: after each pause, a fixed piece of host-only Python work, one small
kernel launched and waited for, and a captured CUDA graph of many small kernels replayed and waited for (the
replay call's own host time too). `benchmarks/idle_gap.py` finds a request slower after a pause; this tells
whether the host, the driver's launch path or the device pays for it without an engine in the way.

Usage: python benchmarks/idle_wake.py [--gaps 0,0.05,0.2,1] [--repeats 12] [--kernels 64] [--spin] [--keepalive MS]
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable, Optional

import torch


def host_work() -> None:
    """A fixed amount of interpreter work (dicts, lists, small ints), about what a step's bookkeeping does."""
    rows = [{"id": i, "len": i * 3, "pages": [i, i + 1]} for i in range(200)]
    sum(r["len"] + len(r["pages"]) for r in rows)


def timed(fn: Callable[[], None]) -> tuple[float]:
    t0 = time.perf_counter()
    fn()
    return ((time.perf_counter() - t0) * 1e3,)


Probe = Callable[[], tuple[float, ...]]


def probes(kernels: int) -> list[tuple[list[str], Probe]]:
    """Each probe's column names and a call that runs it once and returns those columns' milliseconds."""
    out: list[tuple[list[str], Probe]] = [(["host work"], lambda: timed(host_work))]
    if not torch.cuda.is_available():
        return out
    x = torch.zeros(4096, device="cuda")

    def kernel() -> None:
        x.add_(1.0)
        torch.cuda.synchronize()

    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        for _ in range(3):  # the op's own first-use work stays out of the capture
            x.add_(1.0)
        torch.cuda.synchronize()
        with torch.cuda.graph(graph, stream=stream):
            for _ in range(kernels):
                x.add_(1.0)
    torch.cuda.synchronize()

    def replay() -> tuple[float, float]:
        t0 = time.perf_counter()
        graph.replay()
        t1 = time.perf_counter()
        torch.cuda.synchronize()
        return (time.perf_counter() - t0) * 1e3, (t1 - t0) * 1e3

    return out + [(["kernel + sync"], lambda: timed(kernel)),
                  ([f"graph of {kernels} + sync", "its replay call"], replay)]


def spin(seconds: float) -> None:
    """Wait `seconds` without letting the thread sleep."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def ticking(wait: Callable[[float], None], every: float, action: Callable[[], object]) -> Callable[[float], None]:
    """A pause spent in `wait` that wakes every `every` s to run `action`."""
    def pause(seconds: float) -> None:
        end = time.perf_counter() + seconds
        while (left := end - time.perf_counter()) > 0:
            wait(min(every, left))
            action()
    return pause


def keepalive(wait: Callable[[float], None], every: float) -> Callable[[float], None]:
    """A pause that wakes every `every` s to launch a tiny kernel and wait for it."""
    y = torch.zeros(1, device="cuda")

    def kernel() -> None:
        y.neg_()
        torch.cuda.synchronize()
    return ticking(wait, every, kernel)


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gaps", default="0,0.05,0.2,1", help="Pauses before each probe, seconds, comma-separated.")
    ap.add_argument("--repeats", type=int, default=12)
    ap.add_argument("--kernels", type=int, default=64, help="Kernels in the captured graph.")
    ap.add_argument("--spin", action="store_true",
                    help="Pause by spinning on the clock instead of sleeping (the CPU never idles).")
    ap.add_argument("--keepalive", type=float, default=0.0, metavar="MS",
                    help="During a pause, launch one tiny kernel every MS milliseconds (and wait for it).")
    args = ap.parse_args(argv)
    pause = spin if args.spin else time.sleep
    if args.keepalive and torch.cuda.is_available():
        pause = keepalive(pause, args.keepalive / 1e3)
    named = probes(args.kernels)
    for _, fn in named:  # first calls (allocator, module loads) are not a pause's cost
        fn()
    print("ms per probe (median, min-max): pause s | " + " | ".join(c for cols, _ in named for c in cols))
    for gap in (float(g) for g in args.gaps.split(",")):
        cells = []
        for _, fn in named:  # each probe on its own after each pause
            runs = []
            for _ in range(args.repeats):
                pause(gap)
                runs.append(fn())
            cells += [f"{statistics.median(v):.3f} ({min(v):.3f}-{max(v):.3f})" for v in zip(*runs)]
        print(f"{gap:5.2f} | " + " | ".join(cells))


if __name__ == "__main__":
    main()
