"""Whether the decode linears' start-up tuning picks the same launches when run again: tunes each weight shape
`--rounds` times in one process (the GEMV for 1-4 rows, the skinny GEMM for 8-256) and, from every round's
timings, recomputes the pick two ways: the fastest launch under the bound (the rule before the tie rule) and
`tune_timing.choose` (launches within `TIE` of the fastest go to the one listed first). Prints, per shape,
prologue and rows, the distinct picks of each rule over the rounds; a rule whose picks move between rounds gives
two cache roots of one machine different plans, and a workload's figures move with them.

    PYTHONPATH=. python benchmarks/linear_tune_stability.py [--rounds 5] [--shapes 4096x1024:plain+rmsnorm ...]

Default shapes: Qwen3-0.6B's four projections with the prologues its engine tunes (bf16).
"""
from __future__ import annotations

import argparse
import collections
from typing import Optional

QWEN3_06B = ("4096x1024:plain+rmsnorm", "1024x2048:plain", "6144x1024:plain+rmsnorm", "1024x3072:plain+silu_mul")


def parse_shape(text: str) -> tuple[int, int, tuple[str, ...]]:
    """`NxK:prologue+prologue` -> (n, k, prologues)."""
    dims, _, prologues = text.partition(":")
    n, k = (int(d) for d in dims.split("x"))
    return n, k, tuple(prologues.split("+")) if prologues else ("plain",)


def picks(timings: dict[str, float], prologue: str, rows: int, margin: float) -> tuple[str, str]:
    """(the fastest launch under the bound, `choose`'s launch) for one prologue and rows bucket, from a round's
    `timings_us` (keys `prologue/rows/label`, the candidates in their listed order); "torch" where none."""
    from tierlm.kernels.tune_timing import choose

    prefix = f"{prologue}/{rows}/"
    mine = {key[len(prefix):]: us for key, us in timings.items() if key.startswith(prefix)}
    bound = min(us for label, us in mine.items() if label == "torch" or label.startswith("unfused+")) * margin
    timed = [(label, us) for label, us in mine.items() if label != "torch" and not label.startswith("unfused+")]
    under = [(label, us) for label, us in timed if us < bound]
    fastest = min(under, key=lambda t: t[1])[0] if under else "torch"
    return fastest, choose(timed, bound) or "torch"


def tally(rounds: list[dict[str, float]], prologues: tuple[str, ...], buckets: tuple[int, ...],
          margin: float) -> list[tuple[str, int, collections.Counter, collections.Counter]]:
    """Per (prologue, rows): how often each launch was picked over the rounds, by each rule."""
    out = []
    for prologue in prologues:
        for rows in buckets:
            old, new = collections.Counter(), collections.Counter()
            for timings in rounds:
                a, b = picks(timings, prologue, rows, margin)
                old[a] += 1
                new[b] += 1
            out.append((prologue, rows, old, new))
    return out


def fmt(counter: collections.Counter) -> str:
    return ", ".join(f"{label} x{n}" for label, n in counter.most_common())


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5, help="Tunings per shape (default: 5).")
    ap.add_argument("--shapes", nargs="+", default=list(QWEN3_06B),
                    help="Weight shapes as NxK:prologue+prologue (default: Qwen3-0.6B's).")
    ap.add_argument("--no-skinny", action="store_true", help="Tune only the GEMV (1-4 rows).")
    args = ap.parse_args(argv)
    if args.rounds < 2:
        ap.error("--rounds must be at least 2")
    try:
        shapes = [parse_shape(s) for s in args.shapes]
    except ValueError:
        ap.error(f"--shapes: each is NxK[:prologue+prologue], got {args.shapes}")
    import torch

    from tierlm.kernels import gemv_tune, skinny_gemm_tune
    from tierlm.kernels.linear_tune import MARGIN

    if not torch.cuda.is_available():
        raise SystemExit("linear_tune_stability needs a CUDA GPU")
    device = torch.device("cuda")
    print(f"{torch.cuda.get_device_name(device)}, {args.rounds} rounds; picks: fastest under the bound | tie rule")
    moved = {"fastest": 0, "tie rule": 0}
    for n, k, prologues in shapes:
        tunings = [("gemv", prologues, gemv_tune.BUCKETS,
                    lambda: gemv_tune.tune_gemv(n, k, prologues, torch.bfloat16, device))]
        if not args.no_skinny:
            tunings.append(("skinny", ("plain",), skinny_gemm_tune.BUCKETS,
                            lambda: skinny_gemm_tune.tune_skinny(n, k, torch.bfloat16, device)))
        for name, tuned_prologues, buckets, tune in tunings:
            rounds = [tune()["timings_us"] for _ in range(args.rounds)]
            for prologue, rows, old, new in tally(rounds, tuned_prologues, buckets, MARGIN):
                moved["fastest"] += len(old) > 1
                moved["tie rule"] += len(new) > 1
                mark = " <- moves" if len(old) > 1 or len(new) > 1 else ""
                print(f"{name} {n}x{k} {prologue:>8} {rows:>3} rows: {fmt(old)} | {fmt(new)}{mark}")
    print(f"(prologue, rows) whose pick moved between rounds: fastest {moved['fastest']}, "
          f"tie rule {moved['tie rule']}")


if __name__ == "__main__":
    main()
