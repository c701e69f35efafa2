"""`tierlm bench`: workload benchmarks (offline throughput, multi-turn KV tiering, online serving, start-up)."""
from __future__ import annotations

import argparse
import importlib

# Each module defines `register(subparsers)` adding its own parser with `func` set.
WORKLOADS = ("tierlm.cli.bench.offline", "tierlm.cli.bench.multiturn", "tierlm.cli.bench.serve",
             "tierlm.cli.bench.startup")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="Run a benchmark workload.",
                       description="Benchmarks with progress bars, a human table and --json for machines.")
    workloads = p.add_subparsers(dest="workload", metavar="WORKLOAD")
    for name in WORKLOADS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:
                continue
            raise
        module.register(workloads)
    p.set_defaults(func=lambda args: p.print_help() or 2)
