"""Temperature sampling of a batch on the GPU: the torch exponential race (six passes over a float32 copy of
the logits) against the fused kernel (`kernels.race_sample`, one pass), per batch size, at Qwen3's vocabulary
in bf16. Prints microseconds per call (median of 20 CUDA-event timings, `benchmarks/timing.py`; host time inside a call counts).

    PYTHONPATH=. python benchmarks/bench_sampler.py [--batches 1,64,256] [--vocab 151936]
"""
from __future__ import annotations

import argparse

import torch

from tierlm.engine.sampler import Sampler
from tierlm.sampling_params import SamplingParams
from benchmarks.timing import median_seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", default="1,4,64,256")
    ap.add_argument("--vocab", type=int, default=151936)
    args = ap.parse_args()
    dev = torch.device("cuda")
    print(f"{'batch':>6} {'torch us':>9} {'fused us':>9} {'ratio':>6}")
    for batch in (int(b) for b in args.batches.split(",")):
        logits = torch.randn(batch, args.vocab, device=dev).to(torch.bfloat16)
        params = [SamplingParams(temperature=0.6)] * batch
        gens = [None] * batch
        times = []
        for fused in (False, True):
            sampler = Sampler(dev, seed=0)
            sampler._fused = fused
            times.append(median_seconds(lambda: sampler.sample(logits, params, gens), iters=20, warmup=3) * 1e6)
        print(f"{batch:>6} {times[0]:9.1f} {times[1]:9.1f} {times[1] / times[0]:6.2f}")


if __name__ == "__main__":
    main()
