"""How long the first request of each sampling kind takes after start-up, against the second of its kind.

One engine (default Qwen3-0.6B, dummy weights) starts, then serves one request at a time, each kind twice in a
row: greedy, sampled, top-k/top-p/min-p, seeded, logit bias, repetition penalty, logprobs (64 random prompt ids,
2 tokens). A kind whose first request is much slower than its second loads kernels on first use that the
start-up warm-up did not. `--no-torch-warm-up` leaves out the sampler's warm-up of its torch paths
(`Sampler._warm_torch`); run once with and once without, each in a fresh process. Prints one line per kind.
`--trace-first` runs the process's first two (greedy) requests under torch's profiler and prints, for each, the
operators with the most host time and the kernels the first launched that the second did not.

    python benchmarks/first_request_kinds.py [--model builtin:qwen3-0.6b] [--no-torch-warm-up] [--trace-first]
"""
from __future__ import annotations

import argparse
import contextlib
import random
import time

import torch

from tierlm import LLM, SamplingParams
from llm_options import probe_options  # a sibling module: this directory is first on the path of a script

KINDS = {
    "greedy": dict(temperature=0.0),
    "sampled": dict(temperature=1.0),
    "filtered": dict(temperature=0.7, top_k=20, top_p=0.95, min_p=0.01),
    "seeded": dict(temperature=1.0, seed=1),
    "logit_bias": dict(temperature=0.0, logit_bias={5: 2.0}),
    "penalty": dict(temperature=0.0, repetition_penalty=1.05),
    "logprobs": dict(temperature=0.0, logprobs=5),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="builtin:qwen3-0.6b")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--no-torch-warm-up", action="store_true", help="Leave out the sampler's torch-path warm-up.")
    ap.add_argument("--trace-first", action="store_true",
                    help="Profile the first two greedy requests (host operators, kernels only the first launched).")
    args = ap.parse_args()
    if args.no_torch_warm_up:
        from tierlm.engine.sampler import Sampler
        Sampler._warm_torch = lambda self, vocab, dtype: None
    llm = LLM(args.model, **probe_options(args.device))
    rng = random.Random(0)
    vocab = llm.engine.model_config.vocab_size
    print(f"device {torch.cuda.get_device_name() if args.device == 'cuda' else 'cpu'}, torch-path warm-up "
          f"{'off' if args.no_torch_warm_up else 'on'}; ms per request of 2 tokens, first / second of its kind")
    traces = []
    for name, kind in KINDS.items():
        times = []
        for _ in range(2):
            prompt = [rng.randrange(vocab) for _ in range(64)]
            params = SamplingParams(max_tokens=2, ignore_eos=True, detokenize=False, **kind)
            with _profiled(args.trace_first and len(traces) < 2) as prof:  # the first two requests
                t0 = time.perf_counter()
                llm.generate([prompt], [params])
                times.append((time.perf_counter() - t0) * 1e3)
            if prof is not None:
                traces.append(prof)
        print(f"{name:12s} {times[0]:8.1f} / {times[1]:8.1f}")
    llm.close()
    if traces:
        _print_traces(traces)


@contextlib.contextmanager
def _profiled(on: bool):
    """torch's profiler over the block where `on`, else nothing (yields the profiler or None)."""
    if not on:
        yield None
        return
    acts = [torch.profiler.ProfilerActivity.CPU]
    if torch.cuda.is_available():
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=acts) as prof:
        yield prof


def _print_traces(traces: list) -> None:
    """The host operators with the most self time in each traced request; kernels only the first launched."""
    kernels = []
    for i, prof in enumerate(traces):
        events = prof.key_averages()
        print(f"\n== traced request {i + 1}: host operators by self time (ms, calls)")
        for ev in sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:15]:
            print(f"{ev.self_cpu_time_total / 1e3:8.2f} {ev.count:6d}  {ev.key[:90]}")
        kernels.append({e.key for e in events if getattr(e, "self_device_time_total", 0) > 0})
    if len(kernels) == 2:
        print("\n== device work in the first traced request only")
        for key in sorted(kernels[0] - kernels[1]):
            print("  ", key[:110])
        if not kernels[0] - kernels[1]:
            print("   none (the second request launched every kernel the first did)")


if __name__ == "__main__":
    main()
