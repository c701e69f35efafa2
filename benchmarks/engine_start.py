"""An engine's start-up in one process: the seconds `LLM(...)` takes and the engine's own log lines of what it
captured (decode graphs, extend pieces, mixed-step and prefill-pass graphs) and how long each took.

Usage: python benchmarks/engine_start.py [--model builtin:qwen3-0.6b] [--device cuda]
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Optional

import torch

from tierlm import LLM
from llm_options import probe_options  # a sibling module: this directory is first on the path of a script


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="builtin:qwen3-0.6b")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    t0 = time.perf_counter()
    llm = LLM(args.model, **probe_options(args.device))
    print(f"engine start {time.perf_counter() - t0:.2f} s")
    llm.close()


if __name__ == "__main__":
    main()
