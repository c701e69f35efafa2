"""Benchmarks run through `tierlm bench <name>`: one module per workload, each with `register(subparsers)`."""
