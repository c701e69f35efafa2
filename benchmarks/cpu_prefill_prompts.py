"""How many prompts each prefill pass of a `bench offline` workload holds, and so which passes a captured pass
of at most N prompts can replay whole (CPU, no GPU needed: the scheduler decides this, not the device); and what
the scheduler's own decision (`Scheduler.schedule`) costs the host per pass, prefill and decode.

A tiny random model (written to a temporary folder) runs the workload with the engine's scheduler as it is
(mixed steps off, the default); every prefill pass is recorded with its prompts (chunks) and tokens. A prefill
pass that holds more prompts than a captured pass does replays the piecewise graphs instead, one attention launch
per layer from the host, which on a small model costs more host time than the pass takes on the device.
Printed: passes, tokens and the share of each that fits `--capacity` prompts, for each capacity asked for, and the
median microseconds of a `schedule` call that returned a prefill pass and one that returned a decode step.

    PYTHONPATH=. python benchmarks/cpu_prefill_prompts.py [--num-requests 1024 --input-len 8 32
        --output-len 8 64] [--capacity 8 64] [--max-tokens 8192]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from tierlm import SamplingParams
from tierlm.cli.args import add_engine_args, config_from_args
from tierlm.cli.bench.offline import Workload
from tierlm.engine.engine import Engine
from tierlm.models.config import ALLOW_LONG_CONTEXT


def record(model: str, work: Workload, max_running: int) -> tuple[list[tuple[int, int]], dict[str, list[float]]]:
    """(prompts, tokens) of every prefill pass when `work` runs all at once, and the seconds of each `schedule`
    call by the mode of the batch it returned."""
    ap = argparse.ArgumentParser()
    add_engine_args(ap, model_required=False)
    os.environ[ALLOW_LONG_CONTEXT] = "1"  # prompts past the tiny model's positions: only host time is measured
    engine = Engine(config_from_args(ap.parse_args(["--model", model, "--max-model-len", "2048",
                                                    "--max-running-requests", str(max_running)])))
    passes: list[tuple[int, int]] = []
    seconds: dict[str, list[float]] = {"prefill": [], "decode": [], "mixed": []}
    schedule = engine.scheduler.schedule

    def recording():
        t0 = time.perf_counter()
        batch, refused = schedule()
        took = time.perf_counter() - t0
        if batch is not None:
            seconds[batch.mode].append(took)
            if batch.mode == "prefill":
                passes.append((len(batch.reqs), sum(batch.extend_lens)))
        return batch, refused

    engine.scheduler.schedule = recording
    for i, (ids, n_out) in enumerate(zip(work.prompts, work.output_lens)):
        engine.add_request(str(i), ids, SamplingParams(max_tokens=n_out, ignore_eos=True, detokenize=False))
    while engine.has_unfinished():
        engine.step()
    engine.close()
    return passes, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num-requests", type=int, default=1024)
    ap.add_argument("--input-len", type=int, nargs=2, default=(8, 32))
    ap.add_argument("--output-len", type=int, nargs=2, default=(8, 64))
    ap.add_argument("--max-running-requests", type=int, default=256)
    ap.add_argument("--capacity", type=int, nargs="+", default=[8, 64], help="prompts a captured pass holds")
    ap.add_argument("--max-tokens", type=int, default=8192, help="tokens of the largest captured prefill pass")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as model:
        subprocess.run([sys.executable, "-m", "tierlm", "make-tiny-model", model, "--force"], check=True,
                       capture_output=True)
        work = Workload.make(args.num_requests, tuple(args.input_len), tuple(args.output_len), 500, seed=0)
        passes, seconds = record(model, work, args.max_running_requests)
    tokens = sum(t for _, t in passes)
    print(f"{len(passes)} prefill passes, {tokens} prefill tokens; prompts per pass: "
          f"median {sorted(c for c, _ in passes)[len(passes) // 2]}, max {max(c for c, _ in passes)}")
    for cap in args.capacity:
        fit = [(c, t) for c, t in passes if c <= cap and t <= args.max_tokens]
        print(f"capacity {cap:4d} prompts: {len(fit):5d} of {len(passes)} passes "
              f"({100 * len(fit) / len(passes):5.1f}%), {sum(t for _, t in fit):7d} of {tokens} tokens replay whole")
    print("schedule, median us per call: " + ", ".join(f"{mode} {statistics.median(v) * 1e6:.1f} ({len(v)} calls)"
                                                       for mode, v in seconds.items() if v))


if __name__ == "__main__":
    main()
