"""A request's latency after the engine sat idle, against back to back: one short greedy request (8 prompt tokens,
2 out) at a time through `LLM.generate`, after a pause of each of `--gaps` seconds, `--repeats` times each. A
latency that grows with the pause is paid by whatever sleeps while the engine idles (on a CPU, torch's OpenMP
threads; on a GPU, clocks and the driver), not by the request being a first one.

With `--trace N`, N more requests per pause run under torch's profiler, to tell the two apart: the time from the
request's start to its first device op (kernel, copy or set: the host's work, and the device waking), from the
first to the last (slower kernels after a pause: clocks), after the last (the host taking the result), and the SM
clock read just before the request (where NVML is there to read it).

With `--phases N`, N more requests per pause without the profiler (its own host time is larger than what a
pause costs): the host's milliseconds per phase of the engine's steps (`tierlm.engine.step_clock`), the time from
the request's start to the engine's first call of the worker's `execute` and the host time of those calls. A
pause paid in `launch` (or before the first execute) is the host's; one paid in `wait` is the device's.

Usage: python benchmarks/idle_gap.py --model MODEL_DIR [--device cpu] [--threads N] [--gaps 0,0.05,0.2,1]
[--trace N] [--phases N] [--keep-warm] [--spin]
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable, Optional

import torch

from tierlm import LLM, SamplingParams
from tierlm.engine.step_clock import PHASES
from tierlm.server.engine_proc import KEEP_WARM_MS
from idle_wake import spin, ticking  # sibling modules: this directory is first on the path of a script
from llm_options import probe_options


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="builtin:qwen3-0.6b")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch's intra-op threads (0: torch's default).")
    ap.add_argument("--gaps", default="0,0.05,0.2,1", help="Pauses before each request, seconds, comma-separated.")
    ap.add_argument("--repeats", type=int, default=12)
    ap.add_argument("--trace", type=int, default=0, metavar="N",
                    help="Also N requests per pause under torch's profiler (medians printed).")
    ap.add_argument("--keep-warm", action="store_true",
                    help="During each pause call the engine's keep_warm every KEEP_WARM_MS, as the server's loop "
                         "does for --keep-warm-s after its last step.")
    ap.add_argument("--spin", action="store_true",
                    help="Pause by spinning on the clock instead of sleeping (the host thread never idles).")
    ap.add_argument("--phases", type=int, default=0, metavar="N",
                    help="Also N requests per pause timed by step phase, without the profiler (medians printed).")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    llm = LLM(args.model, **probe_options(args.device, dummy=args.model.startswith("builtin:")))
    params = SamplingParams(temperature=0, max_tokens=2, ignore_eos=True, detokenize=False)
    wait = spin if args.spin else time.sleep
    # the server's idle loop, kept warm: keep_warm every KEEP_WARM_MS
    pause = ticking(wait, KEEP_WARM_MS / 1e3, llm.engine.keep_warm) if args.keep_warm else wait
    warm = "on" if args.keep_warm else "off"
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, keep warm {warm}, "
          f"pause {'spinning' if args.spin else 'sleeping'}; "
          "ms per request (median, min-max)")
    for gap in (float(g) for g in args.gaps.split(",")):
        times = []
        for i in range(args.repeats):
            pause(gap)
            t0 = time.perf_counter()
            llm.generate([[5 + i, 6, 7, 8, 9, 10, 11, 12]], params)
            times.append((time.perf_counter() - t0) * 1e3)
        print(f"pause {gap:5.2f} s: {statistics.median(times):7.2f} ({min(times):.2f}-{max(times):.2f})")
    if args.trace:
        print(f"traced ({args.trace} per pause, medians): pause s | wall ms | to the first device op ms | "
              "first device op to last ms | after it ms | device ops | SM clock MHz")
        trace_request(llm, params, 0.0, args.device)  # the profiler's own first use is not a pause's cost
        for gap in (float(g) for g in args.gaps.split(",")):
            rows = [trace_request(llm, params, gap, args.device) for _ in range(args.trace)]
            cols = [statistics.median(c) if None not in c else None for c in list(zip(*rows))[:5]]
            cells = " | ".join("-" if c is None else f"{c:.3f}" for c in cols[1:4])
            print(f"{gap:5.2f} | {cols[0]:7.2f} | {cells} | {int(cols[4])} | {rows[-1][5]}")
    if args.phases:
        print_phases(llm, params, args.gaps, args.phases, pause)
    llm.close()


def print_phases(llm: LLM, params: SamplingParams, gaps: str, n: int,
                 pause: Callable[[float], None] = time.sleep) -> None:
    """The `--phases` table: per pause, medians over `n` requests of the columns `phase_request` gives."""
    print(f"phases ({n} per pause, medians, host ms): pause s | wall | to the first execute | execute | "
          + " | ".join(PHASES) + " | outside steps")
    for gap in (float(g) for g in gaps.split(",")):
        rows = [phase_request(llm, params, gap, pause) for _ in range(n)]
        cols = [statistics.median(c) for c in zip(*rows)]
        print(f"{gap:5.2f} | " + " | ".join(f"{c:.3f}" for c in cols))


def phase_request(llm: LLM, params: SamplingParams, gap: float,
                  pause: Callable[[float], None] = time.sleep) -> tuple[float, ...]:
    """One request after `gap` s: wall, start to the first `execute` call, the `execute` calls' host time, each
    step phase's host time and the time outside the engine's steps (generate's own work), all in ms."""
    engine = llm.engine
    worker, execute = engine.worker, engine.worker.execute
    calls: list[tuple[float, float]] = []

    def timed(*a, **kw):
        t = time.perf_counter()
        try:
            return execute(*a, **kw)
        finally:
            calls.append((t, time.perf_counter()))

    pause(gap)
    engine.clock.reset()
    worker.execute = timed  # an instance attribute shadows the method for this request only
    try:
        t0 = time.perf_counter()
        llm.generate([[4, 6, 7, 8, 9, 10, 11, 12]], params)
        wall = time.perf_counter() - t0
    finally:
        del worker.execute
    phases = [engine.clock.seconds[p] for p in PHASES]
    first = calls[0][0] - t0 if calls else 0.0
    busy = sum(b - a for a, b in calls)
    return tuple(x * 1e3 for x in (wall, first, busy, *phases, wall - sum(phases)))


def sm_clock(device: str) -> str:
    """The SM clock now, in MHz, or "-" where NVML cannot be read (no GPU, no pynvml)."""
    if not device.startswith("cuda"):
        return "-"
    try:
        return str(torch.cuda.clock_rate())
    except Exception:  # pynvml missing or NVML refusing: the clock is only a hint here
        return "-"


def trace_request(llm: LLM, params: SamplingParams, gap: float, device: str) -> tuple:
    """One request after `gap` s under the profiler, on the profiler's clock (the device's timestamps mapped onto
    the host's): (wall, to the first device op, first to last, after the last) in ms, the device op count and the
    SM clock; the three spans None where no device op ran (a CPU)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile, record_function

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with profile(activities=acts) as prof:
        time.sleep(gap)
        clock = sm_clock(device)
        with record_function("idle_gap.request"):
            llm.generate([[3, 6, 7, 8, 9, 10, 11, 12]], params)
    events = prof.events()
    req = next(e.time_range for e in events if e.name == "idle_gap.request")
    # kernels, copies and sets alike; under PDL their spans overlap, so no busy time is summed
    ops = [e.time_range for e in events if e.device_type == DeviceType.CUDA and e.time_range.start >= req.start]
    wall = (req.end - req.start) / 1e3
    if not ops:
        return wall, None, None, None, 0, clock
    first, last = min(k.start for k in ops), max(k.end for k in ops)
    return wall, (first - req.start) / 1e3, (last - first) / 1e3, (req.end - last) / 1e3, len(ops), clock


if __name__ == "__main__":
    main()
