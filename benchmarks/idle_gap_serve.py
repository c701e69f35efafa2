"""A request's time to first token through `tierlm serve` after the server sat idle, against back to back: one
streamed completion (8 new prompt token ids, 4 tokens out: a server without a tokenizer serves it too) at a time
after each pause of `--gaps`, `--repeats` times each, on one server started from `--code`'s tree with the serve
flags after `--` (so `-- --keep-warm-s 10` against the default, 0, compares an engine that keeps the device warm
with one that lets it idle). Prints the median and spread per pause.

    python benchmarks/idle_gap_serve.py --model MODEL [--gaps 0,0.05,0.2,1] [--repeats 12] [-- SERVE FLAGS...]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

from first_request_serve import serving, ttft_ms  # a sibling module: this directory is first on the path


def prompt(n: int) -> list[int]:
    """The n-th request's 8 prompt token ids: a first token of its own, so no request reuses another's KV."""
    return [100 + n, 6, 7, 8, 9, 10, 11, 12]


def main(argv: list[str]) -> None:
    serve_flags = argv[argv.index("--") + 1:] if "--" in argv else []
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True,
                    help="model directory (absolute, or relative to --code) or builtin: name")
    ap.add_argument("--gaps", default="0,0.05,0.2,1", help="Pauses before each request, seconds, comma-separated.")
    ap.add_argument("--repeats", type=int, default=12)
    ap.add_argument("--code", default=".", help="the source tree to run the server from")
    ap.add_argument("--start-timeout", type=float, default=600.0)
    args = ap.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    n = 0
    with serving(args, serve_flags) as (port, model):
        for _ in range(3):  # the server's own first requests are not a pause's cost
            ttft_ms(port, "completion", model, n := n + 1, prompt(n))
        print(f"serve flags: {' '.join(serve_flags) or '(none)'}; TTFT ms per request (median, min-max)")
        for gap in (float(g) for g in args.gaps.split(",")):
            times = []
            for _ in range(args.repeats):
                time.sleep(gap)
                times.append(ttft_ms(port, "completion", model, n := n + 1, prompt(n)))
            print(f"pause {gap:5.2f} s: {statistics.median(times):7.2f} ({min(times):.2f}-{max(times):.2f})")


if __name__ == "__main__":
    main(sys.argv[1:])
