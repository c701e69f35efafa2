"""Whether the fused MoE's start-up tuning picks the same launch when run again, and what timing eagerly hid:
per token-count bucket, `--rounds` tunings as the engine runs them (`fused_moe_tune.tune_fused_moe`: graph
replays over several routings, the tie rule) and, in the same rounds, every candidate timed eagerly by Triton's
`do_bench` (how the tuner timed before: the host's launches included) with its fastest taken. Prints per bucket
each way's picks over the rounds and the candidates' median times.

    PYTHONPATH=. python benchmarks/moe_tune_stability.py [--rounds 3] [--shape 64,2048,1408,6] [--tokens 1,2,4]
        [--no-eager]

`--shape` is experts, hidden, intermediate, top-k (default: DeepSeek-V2-Lite's routed experts), bf16.
"""
from __future__ import annotations

import argparse
import collections
import statistics
from typing import Optional


def eager_times(shape: tuple[int, int, int, int], tokens: int, device) -> dict[str, float]:
    """Every candidate's `do_bench` median in microseconds, on one random routing."""
    import torch
    import triton

    from tierlm.kernels.fused_moe import fused_moe
    from tierlm.kernels.fused_moe_tune import candidates, launch_name, random_layer

    gate_up, down, ((x, weights, ids),) = random_layer(*shape, tokens, torch.bfloat16, device, 1, seed=1)
    return {launch_name(c): 1e3 * triton.testing.do_bench(lambda c=c: fused_moe(x, gate_up, down, weights, ids, c),
                                                           warmup=5, rep=25, return_mode="median")
            for c in candidates(tokens)}


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="Tunings per bucket (default: 3).")
    ap.add_argument("--shape", default="64,2048,1408,6", help="experts,hidden,intermediate,top_k.")
    ap.add_argument("--tokens", default="", help="Comma list of token counts (default: the tuner's buckets).")
    ap.add_argument("--no-eager", action="store_true", help="Skip the eager do_bench timings.")
    args = ap.parse_args(argv)
    try:
        shape = tuple(int(v) for v in args.shape.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 4 or min(shape) < 1:
        ap.error(f"--shape: four positive integers experts,hidden,intermediate,top_k, got {args.shape!r}")
    if args.rounds < 2:
        ap.error("--rounds must be at least 2")
    try:
        token_counts = [int(v) for v in args.tokens.split(",") if v]
    except ValueError:
        token_counts = [0]
    if any(n < 1 for n in token_counts):
        ap.error(f"--tokens: a comma list of positive integers, got {args.tokens!r}")
    import torch

    from tierlm.kernels.fused_moe_tune import BUCKETS, config_of, launch_name, tune_fused_moe

    if not torch.cuda.is_available():
        raise SystemExit("moe_tune_stability needs a CUDA GPU")
    device = torch.device("cuda")
    print(f"{torch.cuda.get_device_name(device)}, shape {shape}, {args.rounds} rounds")
    for tokens in token_counts or BUCKETS:
        graph_picks, eager_picks = collections.Counter(), collections.Counter()
        graph_us, eager_us = collections.defaultdict(list), collections.defaultdict(list)
        for _ in range(args.rounds):
            out = tune_fused_moe(*shape, tokens, torch.bfloat16, device)
            graph_picks[launch_name(config_of(out))] += 1
            for name, us in out["timings_us"].items():
                if us is not None:
                    graph_us[name].append(us)
            if args.no_eager:
                continue
            eager = eager_times(shape, tokens, device)
            eager_picks[min(eager, key=eager.get)] += 1
            for name, us in eager.items():
                eager_us[name].append(us)
        print(f"{tokens:>5} tokens  graph picks: {dict(graph_picks)}  eager picks: {dict(eager_picks)}")
        for name in graph_us:
            eager_med = f"{statistics.median(eager_us[name]):9.1f} us" if eager_us[name] else "-"
            print(f"      {name:<22} graph {statistics.median(graph_us[name]):9.1f} us   eager {eager_med}")


if __name__ == "__main__":
    main()
