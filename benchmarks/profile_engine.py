"""Per-step profile of the engine: where a decode step's time goes at several batch sizes, and a long prefill.

For each batch size (default 1, 64, 256) the engine decodes steadily (every request past its prefill) and
the table gives, per step: wall milliseconds, the device's busy milliseconds (CUDA events around the
worker's execution of each step: with overlap scheduling the start event runs when the previous step's
kernels have finished, so the span is this step's own device time, gaps waiting for the host included), and
the host milliseconds of each phase of `Engine.step` (`tierlm.engine.step_clock`: schedule, launch, wait on
the device, outputs). A step whose device time is far below its wall time is host-bound. Then one prefill of
`--prefill-len` tokens: time to first token and device time. Run it before and after a change; the table
goes in docs/benchmarks.md.

    PYTHONPATH=. python benchmarks/profile_engine.py [--model builtin:qwen3-0.6b] [--batches 1,64,256]
        [--context 512] [--steps 100] [--prefill-len 8192[,N...]] [--json] [--torch-profile [--profile-batch N]]
        [ENGINE FLAGS, e.g. --no-overlap-schedule or --device cpu]

Where the device time of a batch-1 step goes, kernel by kernel (#20's first question):
    PYTHONPATH=. python benchmarks/profile_engine.py --batches 1 --prefill-len 0 --torch-profile

What a mixed step costs against a decode step of the same batch (#17): with `--mixed-chunks 128,512,2048`
every timed step of `--mixed-batch` decoding requests also carries one new prompt of that many tokens (the
scheduler's mixed budget set to the batch plus the chunk), so the host ms of the launch phase show what the
pass's eager attention calls cost the host, and the device ms what the chunk costs the device. Pass
`--enable-mixed-chunk` so the engine captures the graph pieces it serves mixed steps with:
    PYTHONPATH=. python benchmarks/profile_engine.py --model builtin:llama-3.1-8b --batches 64 \
        --prefill-len 0 --enable-mixed-chunk --mixed-chunks 128,512,2048
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import random
import time
from typing import Any, Callable

import torch

from tierlm.cli.args import add_engine_args, config_from_args
from tierlm.engine.engine import Engine
from tierlm.engine.step_clock import PHASES
from tierlm.sampling_params import SamplingParams


class DeviceTimer:
    """Wraps the engine worker's `execute` with CUDA events (host clock on CPU, where execution is synchronous)."""

    def __init__(self, engine: Engine) -> None:
        self.engine, self.cuda = engine, engine.device.type == "cuda"
        self.spans: list[Any] = []
        self._orig: Callable = engine.worker.execute
        engine.worker.execute = self._execute

    def _execute(self, plan: Any, tickets: Any) -> Any:
        if not self.cuda:
            t0 = time.perf_counter()
            out = self._orig(plan, tickets)
            self.spans.append(time.perf_counter() - t0)
            return out
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = self._orig(plan, tickets)
        end.record()
        self.spans.append((start, end))
        return out

    def take_ms(self) -> float:
        """Total device milliseconds of the steps since the last call."""
        if self.cuda:
            torch.cuda.synchronize(self.engine.device)
            ms = sum(s.elapsed_time(e) for s, e in self.spans)
        else:
            ms = sum(self.spans) * 1e3
        self.spans = []
        return ms

    def close(self) -> None:
        self.engine.worker.execute = self._orig


def sync(engine: Engine) -> None:
    if engine.device.type == "cuda":
        torch.cuda.synchronize(engine.device)


def add(engine: Engine, n: int, prompt_len: int, max_tokens: int, vocab: int, seed: int) -> None:
    rng = random.Random(seed)
    for i in range(n):
        engine.add_request(f"p{seed}-{i}", [rng.randrange(vocab) for _ in range(prompt_len)],
                           SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True, detokenize=False))


def drain(engine: Engine) -> None:
    for r in list(engine.scheduler.running) + list(engine.scheduler.waiting):
        engine.abort_request(r.request_id)
    while engine.has_unfinished():
        engine.step()


def start_decoding(engine: Engine, batch: int, context: int, max_tokens: int, vocab: int) -> None:
    """`batch` requests of `context` prompt tokens, run past their prefill into steady decode."""
    add(engine, batch, context, max_tokens, vocab, seed=batch)
    while engine.scheduler.waiting or any(r.prefilling for r in engine.scheduler.running):
        engine.step()
    for _ in range(8):  # settle into steady decode
        engine.step()


def timed_steps(engine: Engine, timer: DeviceTimer, steps: int) -> dict:
    """Run `steps` engine steps: wall, device and per-phase host milliseconds per step."""
    sync(engine)
    timer.take_ms()
    engine.clock.reset()
    t0 = time.perf_counter()
    for _ in range(steps):
        engine.step()
    sync(engine)
    wall = (time.perf_counter() - t0) / steps * 1e3
    return {"ms_per_step": wall, "device_ms_per_step": timer.take_ms() / steps,
            "host_ms": engine.clock.snapshot()["ms_per_step"]}


def decode_profile(engine: Engine, timer: DeviceTimer, batch: int, context: int, steps: int, vocab: int) -> dict:
    start_decoding(engine, batch, context, steps + 64, vocab)
    row = {"batch": batch, **timed_steps(engine, timer, steps)}
    row["tok_per_s"] = batch / row["ms_per_step"] * 1e3
    drain(engine)
    return row


def mixed_profile(engine: Engine, timer: DeviceTimer, batch: int, chunk: int, context: int, steps: int,
                  vocab: int) -> dict:
    """`batch` requests decode while one prompt of `chunk` tokens (answered by its first token) joins every
    step; per step: wall, device and host ms, and the share of the steps that ran mixed."""
    sched = engine.scheduler
    saved = sched.mixed
    start_decoding(engine, batch, context, 2 * steps + 64, vocab)
    # the decodes (rounded up as the budget rounds them) and exactly one whole prompt per pass
    sched.mixed = dataclasses.replace(saved, max_tokens=saved.decode_rows(batch) + chunk, rows=(), backlog_steps=0)
    add(engine, steps + 16, chunk, 1, vocab, seed=10_000 + chunk)
    for _ in range(8):  # settle: the first passes of this size may build kernels
        engine.step()
    modes: list[str] = []
    schedule = sched.schedule

    def counting():
        got, refused = schedule()
        if got is not None:
            modes.append(got.mode)
        return got, refused

    sched.schedule = counting
    row = {"batch": batch, "chunk": chunk, **timed_steps(engine, timer, steps),
           "mixed_share": modes.count("mixed") / max(1, len(modes))}
    sched.schedule, sched.mixed = schedule, saved
    drain(engine)
    return row


def prefill_profile(engine: Engine, timer: DeviceTimer, length: int, vocab: int) -> dict:
    for seed in (7, 8):  # the first pays for first use at this length
        sync(engine)
        timer.take_ms()
        t0 = time.perf_counter()
        add(engine, 1, length, 2, vocab, seed=seed)
        while not any(o.new_token_ids for o in engine.step()):
            pass
        ttft = (time.perf_counter() - t0) * 1e3
        device = timer.take_ms()
        drain(engine)
    return {"prefill_len": length, "ttft_ms": ttft, "device_ms": device, "tok_per_s": length / ttft * 1e3}


def profile_prefills(engine: Engine, length: int, vocab: int, rows: int) -> None:
    """Where the host time of lone prefills of `length` tokens goes (each prompt answered by one token)."""
    import cProfile
    import pstats

    def prefills(seed: int) -> None:
        for i in range(10):
            add(engine, 1, length, 1, vocab, seed=seed + i)
            while engine.has_unfinished():
                engine.step()

    prefills(500)  # first use of this length
    activities = [torch.profiler.ProfilerActivity.CPU]
    if engine.device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        prefills(600)
        sync(engine)
    print(f"lone prefills of {length} tokens, 10 of them: torch profiler by host time")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))
    stats = cProfile.Profile()
    stats.enable()
    prefills(700)
    sync(engine)
    stats.disable()
    print(f"lone prefills of {length} tokens, 10 of them: cProfile by own time")
    pstats.Stats(stats).sort_stats("tottime").print_stats(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", default="1,64,256", help="Comma list of decode batch sizes.")
    ap.add_argument("--context", type=int, default=512, help="Prompt tokens of each decoding request.")
    ap.add_argument("--steps", type=int, default=100, help="Timed decode steps per batch size.")
    ap.add_argument("--prefill-len", default="8192", help="Tokens of the long prefill, or a comma list of "
                                                          "lengths, each timed alone (0: skip it).")
    ap.add_argument("--json", action="store_true", help="Print one JSON object instead of the table.")
    ap.add_argument("--torch-profile", action="store_true", help="Also print torch profiler tables (host "
                    "operators, device kernels, graph-replayed ones included) of decode steps at --profile-batch.")
    ap.add_argument("--profile-batch", type=int, default=0, help="Batch of the --torch-profile steps (default: "
                                                                 "the largest of --batches).")
    ap.add_argument("--profile-rows", type=int, default=30, help="Rows of each --torch-profile table.")
    ap.add_argument("--profile-prefill", type=int, default=0, help="Also profile 10 lone prefills of this many "
                    "tokens on the host: torch profiler (operators and CUDA runtime calls, a host synchronisation "
                    "shows as a long cudaStreamSynchronize or memcpy) and cProfile (Python functions).")
    ap.add_argument("--mixed-chunks", default="", help="Comma list of prompt chunk sizes: also time mixed steps "
                                                       "of --mixed-batch decodes plus one chunk each (see above).")
    ap.add_argument("--mixed-batch", type=int, default=0, help="Decoding requests beside each mixed chunk "
                                                               "(default: the largest of --batches).")
    add_engine_args(ap, model_required=False)
    ap.set_defaults(model="builtin:qwen3-0.6b", load_format="dummy", skip_tokenizer_init=True)
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    lens = [int(n) for n in args.prefill_len.split(",") if n.strip() and int(n) > 0]
    config = config_from_args(args)
    if not config.max_model_len:
        config = config.replace(max_model_len=max([args.context + args.steps + 128] + [n + 8 for n in lens]))
    engine = Engine(config)
    vocab = min(engine.model_config.vocab_size, 30000)
    timer = DeviceTimer(engine)
    rows = [decode_profile(engine, timer, b, args.context, args.steps, vocab) for b in batches]
    chunks = [int(c) for c in args.mixed_chunks.split(",") if c.strip()]
    mixed = [mixed_profile(engine, timer, args.mixed_batch or max(batches), c, args.context, args.steps, vocab)
             for c in chunks]
    prefill = [prefill_profile(engine, timer, n, vocab) for n in lens]
    if args.torch_profile and engine.device.type == "cuda":
        add(engine, args.profile_batch or max(batches), args.context, 200, vocab, seed=99)
        for _ in range(40):
            engine.step()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                                torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(20):
                engine.step()
            sync(engine)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile_rows))
        print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=args.profile_rows))
        drain(engine)
    if args.profile_prefill:
        profile_prefills(engine, args.profile_prefill, vocab, args.profile_rows)
    info = engine.info()
    timer.close()
    engine.close()
    result = {"model": config.model, "device": str(engine.device), "context": args.context,
              "overlap": info.get("overlap"), "cuda_graph": info.get("cuda_graph"), "decode": rows, "mixed": mixed,
              "prefill": prefill}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"decode steps, {config.model}, context ~{args.context}, overlap {result['overlap']}, "
          f"CUDA graphs {result['cuda_graph']} (host ms per phase: {' / '.join(PHASES)})")
    print(f"{'batch':>6}{'ms/step':>10}{'tok/s':>10}{'device ms':>11}   host ms by phase")
    for r in rows:
        host = " / ".join(f"{r['host_ms'][p]:.3f}" for p in PHASES)
        print(f"{r['batch']:>6}{r['ms_per_step']:>10.3f}{r['tok_per_s']:>10.0f}{r['device_ms_per_step']:>11.3f}"
              f"   {host}")
    if mixed:
        print("mixed steps: decodes plus one prompt chunk per step (share of the steps that ran mixed)")
        print(f"{'batch':>6}{'chunk':>7}{'ms/step':>10}{'device ms':>11}{'mixed':>7}   host ms by phase")
        for r in mixed:
            host = " / ".join(f"{r['host_ms'][p]:.3f}" for p in PHASES)
            print(f"{r['batch']:>6}{r['chunk']:>7}{r['ms_per_step']:>10.3f}{r['device_ms_per_step']:>11.3f}"
                  f"{r['mixed_share']:>7.2f}   {host}")
    for p in prefill:
        print(f"prefill of {p['prefill_len']} tokens: first token {p['ttft_ms']:.1f} ms, device "
              f"{p['device_ms']:.1f} ms, {p['tok_per_s']:.0f} tok/s")


if __name__ == "__main__":
    main()
