"""Whether a machine stalls a steady stream of small CUDA graph replays, without the engine: each iteration
replays one captured graph of `--kernels` tiny kernels (about a decode step's launch count), copies a few
bytes back into pinned memory and waits on an event, as the engine's batch-1 step does; the interval of every
iteration is kept. Prints the median interval, how many exceeded `--stall-ms`, the longest ones with the time
they came at, and the times between stalls (a machine-wide poll shows as a regular spacing).

A batch-1 request's stalls that this also shows belong to the machine (its driver, its monitoring, its
virtualisation); ones it does not show are the engine's to find (benchmarks/b1_intervals.py lists them by step
phase). `--eager` launches the kernels one by one instead of by graph.

    PYTHONPATH=. python benchmarks/gpu_stall_probe.py [--seconds 10] [--kernels 300] [--stall-ms 2] [--eager]
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable, Optional


def stalls(times: list[float], stall_ms: float) -> list[tuple[float, float]]:
    """(seconds since the first time, interval ms) of each interval over `stall_ms`, in time order."""
    t0 = times[0] if times else 0.0
    return [(b - t0, (b - a) * 1e3) for a, b in zip(times, times[1:]) if (b - a) * 1e3 > stall_ms]


def report(times: list[float], stall_ms: float, longest: int = 10) -> list[str]:
    """The probe's lines: median interval, stalls counted, the longest and the spacing between stalls."""
    gaps = [(b - a) * 1e3 for a, b in zip(times, times[1:])]
    if not gaps:
        return ["no intervals"]
    found = stalls(times, stall_ms)
    lines = [f"{len(gaps)} intervals over {times[-1] - times[0]:.1f} s: median {statistics.median(gaps):.3f} ms, "
             f"longest {max(gaps):.2f} ms, {len(found)} over {stall_ms:g} ms "
             f"({sum(g for _, g in found):.1f} ms in all)"]
    for at, gap in sorted(found, key=lambda f: -f[1])[:longest]:
        lines.append(f"  {gap:7.2f} ms at {at:7.3f} s")
    if len(found) > 1:
        spacing = [(b - a) * 1e3 for (a, _), (b, _) in zip(found, found[1:])]
        lines.append(f"  between stalls: median {statistics.median(spacing):.1f} ms, min {min(spacing):.1f}, "
                     f"max {max(spacing):.1f}")
    return lines


def make_step(kernels: int, eager: bool) -> Callable[[], None]:
    """One iteration: the kernels (by a graph replay, or launched one by one), a copy back, an event wait."""
    import torch

    dev = torch.device("cuda")
    x = torch.zeros(256, device=dev)
    host = torch.zeros(8, pin_memory=True)
    done = torch.cuda.Event()

    def launches() -> None:
        for _ in range(kernels):
            x.add_(1.0)

    run: Callable[[], None] = launches
    if not eager:
        from benchmarks.timing import captured  # a warm-up call, then the capture

        run = captured(launches)[0].replay

    def step() -> None:
        run()
        host.copy_(x[:8], non_blocking=True)
        done.record()
        done.synchronize()
    return step


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0, help="How long to run (default: 10).")
    ap.add_argument("--kernels", type=int, default=300, help="Kernels per iteration (default: 300).")
    ap.add_argument("--stall-ms", type=float, default=2.0, help="An interval over this is a stall (default: 2).")
    ap.add_argument("--eager", action="store_true", help="Launch the kernels one by one, not by a graph.")
    args = ap.parse_args(argv)
    if args.seconds <= 0 or args.kernels < 1:
        ap.error("--seconds must be positive and --kernels at least 1")
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("gpu_stall_probe.py needs a CUDA device")
    step = make_step(args.kernels, args.eager)
    for _ in range(50):
        step()
    times = [time.perf_counter()]
    end = times[0] + args.seconds
    while times[-1] < end:
        step()
        times.append(time.perf_counter())
    print(f"{'eager launches' if args.eager else 'graph replays'} of {args.kernels} kernels, "
          f"{torch.cuda.get_device_name()}")
    print("\n".join(report(times, args.stall_ms)))


if __name__ == "__main__":
    main()
