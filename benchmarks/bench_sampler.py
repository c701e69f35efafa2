"""A step's sampling on the GPU, torch against the fused kernel (`kernels.race_sample`, one launch), per batch
size, at Qwen3's vocabulary in bf16: greedy batches (torch's argmax) and temperature batches (the torch
exponential race, six passes over a float32 copy of the logits), each with the tokens stored in a token table
as the engine stores them (torch: the sampler's tokens, then the store's launch; fused: the same launch) and
without. Prints microseconds per call (median of 20 CUDA-event timings, `benchmarks/timing.py`; host time
inside a call counts).

    PYTHONPATH=. python benchmarks/bench_sampler.py [--batches 1,4,64,256] [--vocab 151936] [--sweep]
"""
from __future__ import annotations

import argparse
import itertools

import torch

import tierlm.engine.sampler as sampler_module
from tierlm.engine.sampler import Sampler
from tierlm.kernels.race_sample import PickScratch, pick_tokens
from tierlm.kvcache.req_table import TokenSink
from tierlm.sampling_params import SamplingParams
from benchmarks.timing import median_seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", default="1,4,64,256")
    ap.add_argument("--vocab", type=int, default=151936)
    ap.add_argument("--sweep", action="store_true", help="also time the kernel alone per slice size and program "
                    "count (device time of `pick_tokens` with its inputs ready)")
    args = ap.parse_args()
    dev = torch.device("cuda")
    sampler_module.FUSED_MIN_ROWS = 1  # the fused column at every batch size (the engine starts at 64 rows)
    print(f"{'batch':>6} {'rows':>7} {'store':>5} {'torch us':>9} {'fused us':>9} {'ratio':>6}")
    for batch in (int(b) for b in args.batches.split(",")):
        logits = torch.randn(batch, args.vocab, device=dev).to(torch.bfloat16)
        gens = [None] * batch
        table = torch.zeros(batch, 4096, dtype=torch.int32, device=dev)
        sites = torch.arange(batch, dtype=torch.int32, device=dev)
        for temperature, store in itertools.product((0.0, 0.6), (False, True)):
            params = [SamplingParams(temperature=temperature)] * batch
            sink = TokenSink(table, sites, sites + 100) if store else None
            times = []
            for fused in (False, True):
                sampler = Sampler(dev, seed=0)
                sampler._fused = fused
                times.append(median_seconds(lambda: sampler.sample(logits, params, gens, sink), iters=20,
                                            warmup=3) * 1e6)
            rows = "greedy" if temperature == 0.0 else "temp"
            print(f"{batch:>6} {rows:>7} {str(store):>5} {times[0]:9.1f} {times[1]:9.1f} {times[1] / times[0]:6.2f}")
        if args.sweep:
            temps = torch.full((batch,), 0.6, device=dev)
            scratch = PickScratch(dev)
            cells = []
            for quarter, programs, warps in itertools.product((256, 512, 1024), (512, 1024, 2048), (4, 8)):
                us = median_seconds(lambda: pick_tokens(logits, temps, 2**40, scratch, quarter=quarter,
                                                        programs=programs, num_warps=warps), iters=20, warmup=3) * 1e6
                cells.append(f"q{quarter}/p{programs}/w{warps} {us:.1f}")
            print("   kernel us: " + ", ".join(cells))


if __name__ == "__main__":
    main()
