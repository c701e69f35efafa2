"""What a decode step's bookkeeping costs the host per running request (CPU, no GPU needed).

A tiny random model (written to a temporary folder) decodes `--running` requests; once every one of them is
decoding, the per-step host phases that walk the running requests are timed alone, many times: the scheduler
building the decode batch (`Scheduler.schedule`: who decodes, their table entries), the batch turned into the
step plan the worker runs (`make_plan`, the host's part of the launch that walks the requests), that plan
turned into the pass's metadata (`batch`: `ModelRunner.build_batch`, its one packed upload; on the CPU the
upload is a tensor made from the packed ints, on a GPU a pinned buffer filled the same way), the outputs of
a step coming back (`Engine._resolve`: each request's token appended, its stop checks and its `StepOutput`;
with `text`, its incremental detokenization too) and those outputs packed into one message as a server's
engine process sends them (`send`: `wire.output_to_row` per output, `wire.pack`). The forward pass is not
timed: on a GPU it runs while the host does this work, so a step of many short requests is bound by these
phases and the launch.

    PYTHONPATH=. python benchmarks/cpu_step_host.py [--running 64 256] [--repeats 300]
"""
from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from tierlm import SamplingParams
from tierlm.cli.args import add_engine_args, config_from_args
from tierlm.engine.engine import Engine
from tierlm.engine.inflight import InFlight
from tierlm.engine.plan import make_plan
from tierlm.models.config import ALLOW_LONG_CONTEXT
from tierlm.server import wire


def per_call_us(fn, repeats: int) -> float:
    """Median microseconds of `fn()` over `repeats` calls, timed in batches of ten."""
    times = []
    for _ in range(max(1, repeats // 10)):
        start = time.perf_counter()
        for _ in range(10):
            fn()
        times.append((time.perf_counter() - start) / 10 * 1e6)
    return statistics.median(times)


def decoding_engine(model: str, running: int, detokenize: bool) -> Engine:
    """An engine whose `running` requests have all passed their prefill and decode (`detokenize`: with text
    outputs, as a server streams them; without, as `tierlm bench offline` runs)."""
    ap = argparse.ArgumentParser()
    add_engine_args(ap, model_required=False)
    os.environ[ALLOW_LONG_CONTEXT] = "1"  # past a tiny model's positions on purpose: only host time is measured
    engine = Engine(config_from_args(ap.parse_args(["--model", model, "--max-model-len", "4096",
                                                    "--max-running-requests", str(running), "--device", "cpu"])))
    for i in range(running):
        # ids of the tiny tokenizer's printable ASCII bytes: a prompt ends on a whole character, as text does
        engine.add_request(f"r{i}", [11 + (i + j) % 85 for j in range(16 + i % 48)],
                           SamplingParams(max_tokens=3000, ignore_eos=True, detokenize=detokenize))
    while len(engine.scheduler.running) < running or any(r.prefilling for r in engine.scheduler.running):
        engine.step()
    engine.step()
    return engine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--running", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--repeats", type=int, default=300)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as model:
        subprocess.run([sys.executable, "-m", "tierlm", "make-tiny-model", model, "--force"], check=True,
                       capture_output=True)
        print(f"{'running':>8} {'text':>5} {'schedule us':>12} {'per request':>12} {'plan us':>8} "
              f"{'per request':>12} {'batch us':>9} {'per request':>12} {'outputs us':>11} {'per request':>12} "
              f"{'send us':>8} {'per request':>12}")
        for n, detokenize in itertools.product(args.running, (False, True)):
            engine = decoding_engine(model, n, detokenize)
            sched = engine.scheduler
            batch, _ = sched.schedule()
            assert batch is not None and batch.mode == "decode" and len(batch.reqs) == n, "not all decoding"
            schedule_us = per_call_us(sched.schedule, args.repeats)  # nothing launched: the same batch each time
            copies = engine.kv.take_copies()
            writes = (batch.map_rows, batch.map_positions, batch.map_slots)
            plan_us = per_call_us(lambda: make_plan(batch.mode, batch.reqs, batch.extend_lens, writes, copies),
                                  args.repeats)
            plan = make_plan(batch.mode, batch.reqs, batch.extend_lens, writes, copies)[0]
            worker = engine.worker
            batch_us = per_call_us(lambda: worker.runner.build_batch(plan, worker.tables), args.repeats)
            reqs = list(batch.reqs)
            tokens = torch.full((n,), 7, dtype=torch.int64)

            def resolve():
                for r in reqs:
                    r.num_pending += 1  # as the launch leaves it
                engine._resolve(InFlight(reqs, tokens, None, None))

            outputs_us = per_call_us(resolve, args.repeats)
            for r in reqs:
                r.num_pending += 1
            outs = engine._resolve(InFlight(reqs, tokens, None, None))
            send_us = per_call_us(lambda: wire.pack({"t": wire.OUTPUTS, "outs": [wire.output_to_row(o) for o in outs]}),
                                  args.repeats)
            engine.close()
            print(f"{n:8d} {str(detokenize):>5} {schedule_us:12.1f} {schedule_us / n:12.3f} {plan_us:8.1f} "
                  f"{plan_us / n:12.3f} {batch_us:9.1f} {batch_us / n:12.3f} {outputs_us:11.1f} {outputs_us / n:12.3f} "
                  f"{send_us:8.1f} {send_us / n:12.3f}")


if __name__ == "__main__":
    main()
