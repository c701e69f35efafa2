"""What the engine's host spends per arriving request, against how many wait already (CPU, no GPU needed).

A tiny random model (written to a temporary folder); `--requests` prompts of 16-128 tokens are queued with
`Engine.add_request` at once, as a burst reaching a server would be, and the time per arrival is printed for
each queue depth. An arrival must not cost more the longer the queue: the id check and the prefill it
queues behind are kept as the queue changes (`engine/waiting.py`), not walked.

    PYTHONPATH=. python benchmarks/cpu_arrival_cost.py [--requests 1024 4096]
"""
from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time

from tierlm import SamplingParams
from tierlm.cli.args import add_engine_args, config_from_args
from tierlm.engine.engine import Engine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, nargs="+", default=[1024, 4096])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as model:
        subprocess.run([sys.executable, "-m", "tierlm", "make-tiny-model", model, "--force"], check=True,
                       capture_output=True)
        eng_args = argparse.ArgumentParser()
        add_engine_args(eng_args, model_required=False)
        for n in args.requests:
            engine = Engine(config_from_args(eng_args.parse_args(["--model", model, "--max-model-len", "512"])))
            rng = random.Random(n)
            prompts = [[rng.randrange(1, 200) for _ in range(rng.randint(16, 128))] for _ in range(n)]
            start = time.perf_counter()
            for i, prompt in enumerate(prompts):
                engine.add_request(f"r{i}", prompt, SamplingParams(max_tokens=8))
            took = time.perf_counter() - start
            engine.close()
            print(f"{n:6d} arrivals queued in {took * 1e3:8.1f} ms: {took / n * 1e6:6.1f} us each")


if __name__ == "__main__":
    main()
