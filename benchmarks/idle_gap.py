"""A request's latency after the engine sat idle, against back to back: one short greedy request (8 prompt tokens,
2 out) at a time through `LLM.generate`, after a pause of each of `--gaps` seconds, `--repeats` times each. A
latency that grows with the pause is paid by whatever sleeps while the engine idles (on a CPU, torch's OpenMP
threads; on a GPU, clocks and the driver), not by the request being a first one.

Usage: python benchmarks/idle_gap.py --model MODEL_DIR [--device cpu] [--threads N] [--gaps 0,0.05,0.2,1]
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Optional

import torch

from tierlm import LLM, SamplingParams
from llm_options import probe_options  # a sibling module: this directory is first on the path of a script


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="builtin:qwen3-0.6b")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch's intra-op threads (0: torch's default).")
    ap.add_argument("--gaps", default="0,0.05,0.2,1", help="Pauses before each request, seconds, comma-separated.")
    ap.add_argument("--repeats", type=int, default=12)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    llm = LLM(args.model, **probe_options(args.device, dummy=args.model.startswith("builtin:")))
    params = SamplingParams(temperature=0, max_tokens=2, ignore_eos=True, detokenize=False)
    print(f"device {args.device}, torch threads {torch.get_num_threads()}; ms per request (median, min-max)")
    for gap in (float(g) for g in args.gaps.split(",")):
        times = []
        for i in range(args.repeats):
            time.sleep(gap)
            t0 = time.perf_counter()
            llm.generate([[5 + i, 6, 7, 8, 9, 10, 11, 12]], params)
            times.append((time.perf_counter() - t0) * 1e3)
        print(f"pause {gap:5.2f} s: {statistics.median(times):7.2f} ({min(times):.2f}-{max(times):.2f})")
    llm.close()


if __name__ == "__main__":
    main()
