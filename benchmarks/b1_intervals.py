"""Where a batch-1 request's time per output token goes over its life: one request at a time, several in one
process, each token's arrival time taken as `tierlm bench offline` takes it (after `Engine.step` returns), and
the median interval per window of tokens printed with the device's busy time over the same steps, the
garbage collections per generation during the request, the host's milliseconds per step by phase (schedule /
launch / wait / outputs, `tierlm.engine.step_clock`) and the three longest intervals; on a GPU, the caching
allocators' counts last. Under each request, its intervals longer than `--stall-ms`: the host's time per phase in
the step calls between the two tokens and the device spans of those steps, so a stall shows as the host's (in
its launch or outputs phases) or the device's (a long span, the host waiting).

`bench offline`'s batch-1 TPOT is one request's mean interval, so a few stalls of some milliseconds move it as
much as a slower step would. When it differs from run to run while the per-step profile (benchmarks/
profile_engine.py) does not, the table tells which: the windows' medians are the steady step, the longest
intervals the stalls, and the rows show whether only the first request after start-up, every request of one
process or any request at random is slow. Run it a few times:

    PYTHONPATH=. python benchmarks/b1_intervals.py [--requests 3] [--output-len 512] [--temperature 0.6]
        [--window 128] [--stall-ms 2] [ENGINE FLAGS]
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Optional

import torch

from tierlm.cli.args import add_engine_args, config_from_args
from tierlm.engine.engine import Engine
from tierlm.sampling_params import SamplingParams

from benchmarks.profile_engine import DeviceTimer


@dataclass
class StepRecord:
    """One `Engine.step` call of a request's run: when it returned, the tokens it returned, the host's seconds
    per phase within it and the device spans of the executions it started (`DeviceTimer`'s)."""

    at: float
    tokens: int
    host_s: dict[str, float]
    spans: list[Any]


def one_request(engine: Engine, timer: DeviceTimer, rid: str, prompt: list[int], n_out: int,
                temperature: float) -> list[StepRecord]:
    """The request's steps, from its arrival to its last token."""
    timer.take_ms()
    engine.clock.reset()
    engine.add_request(rid, prompt, SamplingParams(temperature=temperature, max_tokens=n_out, ignore_eos=True,
                                                   detokenize=False))
    steps: list[StepRecord] = []
    while engine.has_unfinished():
        before, spans_before = dict(engine.clock.seconds), len(timer.spans)
        outs = engine.step()
        now = time.perf_counter()
        host = {k: v - before[k] for k, v in engine.clock.seconds.items()}
        steps.append(StepRecord(now, sum(len(o.new_token_ids) for o in outs), host, timer.spans[spans_before:]))
    return steps


def span_ms(span: Any) -> float:
    """A `DeviceTimer` span in milliseconds (a pair of recorded CUDA events, or host seconds on the CPU)."""
    return span[0].elapsed_time(span[1]) if isinstance(span, tuple) else span * 1e3


def arrivals_of(steps: list[StepRecord]) -> list[float]:
    """Each token's arrival time (a step that returned two tokens gives its time twice)."""
    return [s.at for s in steps for _ in range(s.tokens)]


def stall_lines(steps: list[StepRecord], stall_ms: float, most: int = 5) -> list[str]:
    """The `most` longest intervals over `stall_ms`, longest first: what the step calls after the earlier token,
    up to the one that returned the later, spent per host phase, and the device spans of the executions from the
    earlier token's step on (device figures need the spans' events to have completed)."""
    with_tokens = [i for i, s in enumerate(steps) if s.tokens]
    found = []
    for a, b in zip(with_tokens, with_tokens[1:]):
        gap = (steps[b].at - steps[a].at) * 1e3
        if gap > stall_ms:
            calls = steps[a + 1:b + 1]
            phases = {k: sum(c.host_s[k] for c in calls) * 1e3 for k in calls[0].host_s}
            device = [span_ms(sp) for c in steps[a:b + 1] for sp in c.spans]
            found.append((gap, b, phases, device))
    found.sort(key=lambda f: -f[0])
    return [f"    {gap:.2f} ms before step {b}: host " + " / ".join(f"{k} {v:.2f}" for k, v in phases.items())
            + " ms; device spans " + ", ".join(f"{d:.2f}" for d in device) + " ms"
            for gap, b, phases, device in found[:most]]


def interval_row(r: int, arrivals: list[float], device_ms: float, gcs: str, host: str, window: int) -> str:
    """One request's line of the table (times in milliseconds)."""
    gaps = [(b - a) * 1e3 for a, b in zip(arrivals, arrivals[1:])]
    tpot = (arrivals[-1] - arrivals[0]) / (len(arrivals) - 1) * 1e3
    windows = " ".join(f"{statistics.median(gaps[i:i + window]):.3f}" for i in range(0, len(gaps), window))
    worst = ", ".join(f"{g:.2f}" for g in sorted(gaps)[-3:])
    return (f"{r:>4} {tpot:>8.3f} {device_ms / len(arrivals):>14.3f} {gcs:>10} {host:>26}  {windows}"
            f"   3 longest: {worst}")


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=3, help="Requests, one after the other (default: 3).")
    ap.add_argument("--input-len", type=int, default=128, help="Prompt tokens (default: 128).")
    ap.add_argument("--output-len", type=int, default=512, help="Output tokens per request (default: 512).")
    ap.add_argument("--temperature", type=float, default=0.6, help="As `bench offline` samples (default: 0.6).")
    ap.add_argument("--window", type=int, default=128, help="Tokens per median interval (default: 128).")
    ap.add_argument("--stall-ms", type=float, default=2.0,
                    help="Intervals longer than this are listed under their request, at most five, with what the "
                         "step calls between the two tokens spent (default: 2.0).")
    add_engine_args(ap)
    args = ap.parse_args(argv)
    if args.output_len < 2 or args.window < 1:
        ap.error("--output-len must be at least 2 and --window at least 1")
    engine = Engine(config_from_args(args))
    timer = DeviceTimer(engine)
    rng = random.Random(0)
    vocab = engine.model_config.vocab_size
    print(f"{'req':>4} {'TPOT ms':>8} {'device ms/tok':>14} {'gc':>10} {'host ms/step':>26}  "
          f"median interval (ms) per {args.window} tokens")
    for r in range(args.requests):
        prompt = [rng.randrange(vocab) for _ in range(args.input_len)]
        gc_before = engine.gc.snapshot()["collections"]
        steps = one_request(engine, timer, f"b1-{r}", prompt, args.output_len, args.temperature)
        if torch.cuda.is_available():
            torch.cuda.synchronize()  # the spans' events have completed
        arrivals, device_ms = arrivals_of(steps), sum(span_ms(sp) for st in steps for sp in st.spans)
        gcs = "/".join(str(b - a) for a, b in zip(gc_before, engine.gc.snapshot()["collections"]))
        host = " / ".join(f"{v:.3f}" for v in engine.clock.snapshot()["ms_per_step"].values())
        print(interval_row(r, arrivals, device_ms, gcs, host, args.window), flush=True)
        for line in stall_lines(steps, args.stall_ms):
            print(line)
    if torch.cuda.is_available():  # a stall from the allocators would show as retries or host allocations
        m, h = torch.cuda.memory_stats(), torch.cuda.host_memory_stats()
        print(f"device allocator: {m.get('num_device_alloc')} allocations, {m.get('num_alloc_retries')} retries, "
              f"{m.get('num_sync_all_streams')} syncs; host allocator: {h.get('num_host_alloc')} allocations")
    # a thread that runs Python beside the step takes the GIL for up to sys.getswitchinterval() at a time
    names = sorted(t.name for t in threading.enumerate())
    print(f"threads ({len(names)}): {', '.join(names)}; switch interval {sys.getswitchinterval() * 1e3:.1f} ms")
    timer.close()
    engine.close()


if __name__ == "__main__":
    main()
