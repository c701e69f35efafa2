"""A model, not a measurement: Poisson arrivals through a simulated engine whose step costs are fitted to one
GPU's measured figures, to compare the sizings of mixed steps over many more requests and seeds than device time
allows (a p99 over 264 requests moves by 2x between runs of the same arrivals on the GPU).

The scheduler is the engine's own sizing rule (`MixedBudget.prefill_room`, passes padded to `token_sizes`); the
rest is simplified: FCFS, chunked prefill, no KV limit, no overlap of host and device, no HTTP. Step costs (ms),
defaults fitted to Llama-3.1-8B on an H200 (docs/benchmarks.md: prefill 25.5 us per token from 1,024 to 8,192
tokens, a decode step of 96 requests at ~1,200 tokens of context 8.4 ms):
    pass of R rows  = max(--weights-ms, R * --row-us / 1000) + --fixed-ms
    + per decode row  --decode-attn-us (its KV read)        + per chunk of L new tokens after P cached ones
      --extend-attn-ps * L * (L + 2P) picoseconds (causal attention)
A variant is NAME=MAX_TOKENS/BACKLOG_STEPS/BURST_TOKENS[/prefill] ("off" 0/0/0: prefill steps of their own;
"/prefill": `--mixed-burst-prefill`, a prefill step of its own while more than BURST_TOKENS wait).

    PYTHONPATH=. python benchmarks/simulate_mixed.py --rate 18.85 --requests 2000 --seeds 5 [--ladder 64]
"""
from __future__ import annotations

import argparse
import dataclasses
import random
from collections import deque

import numpy as np

from benchmarks.replay_arrivals import parse_variant
from tierlm.engine.mixed_budget import MixedBudget


@dataclasses.dataclass
class Sim:
    """Step costs of the simulated engine (see the module doc)."""

    weights_ms: float = 3.4
    row_us: float = 25.5
    fixed_ms: float = 1.2
    decode_attn_us: float = 39.0
    extend_attn_ps: float = 250.0
    max_prefill: int = 8192

    def pass_ms(self, rows: int, decodes: int, chunks: list[tuple[int, int]]) -> float:
        attn = sum(self.extend_attn_ps * n * (n + 2 * p) for n, p in chunks) * 1e-9
        return (max(self.weights_ms, rows * self.row_us / 1e3) + self.fixed_ms
                + decodes * self.decode_attn_us / 1e3 + attn)


def run(sim: Sim, budget: MixedBudget, rate: float, n: int, prompt: int, answer: int,
        seed: int) -> tuple[list[float], list[float]]:
    """TTFT and TPOT (ms) of `n` requests arriving as a Poisson process of `rate` per second."""
    rng = random.Random(seed)
    arrivals, t = [], 0.0
    for _ in range(n):
        arrivals.append(t)
        t += rng.expovariate(rate) * 1e3
    waiting: deque = deque()  # [index, prompt tokens left]
    decoding: dict[int, int] = {}  # index -> tokens produced
    first, ttft, tpot = {}, [], []
    now, i = 0.0, 0
    while i < n or waiting or decoding:
        while i < n and arrivals[i] <= now:
            waiting.append([i, prompt])
            i += 1
        if not waiting and not decoding:
            now = arrivals[i]
            continue
        backlog = sum(w[1] for w in waiting)
        room = budget.prefill_room(len(decoding), backlog) if budget.max_tokens else None
        mixed = room is not None
        take = min(room, sim.max_prefill) if mixed else (sim.max_prefill if waiting else 0)
        chunks, done = [], []
        for w in waiting:
            if take <= 0:
                break
            c = min(w[1], take)
            chunks.append((c, prompt - w[1]))
            w[1] -= c
            take -= c
            if w[1] == 0:
                done.append(w[0])
        while waiting and waiting[0][1] == 0:
            waiting.popleft()
        if chunks and not mixed:  # a prefill step: the decodes wait
            now += sim.pass_ms(sum(c for c, _ in chunks), 0, chunks)
            stepped = []
        else:
            d = len(decoding)
            rows = sum(c for c, _ in chunks) + (budget.decode_rows(d) if chunks else d)
            if chunks:
                rows = next((r for r in budget.rows or (budget.max_tokens,) if r >= rows), rows)
            now += sim.pass_ms(rows, d, chunks)
            stepped = list(decoding)
        for k in stepped:
            decoding[k] += 1
            if decoding[k] == answer:
                del decoding[k]
                tpot.append((now - first[k]) / (answer - 1))
        for k in done:
            first[k] = now
            ttft.append(now - arrivals[k])
            decoding[k] = 1
    return ttft, tpot


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=18.85, help="Requests per second.")
    ap.add_argument("--requests", type=int, default=2000, help="Requests per seed.")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--input-len", type=int, default=1024)
    ap.add_argument("--output-len", type=int, default=256)
    ap.add_argument("--variants", default="off=0/0/0;k4=2048/4/4096;k2=2048/2/4096;k0=2048/0/0;"
                    "k2p=2048/2/4096/prefill;k2p8=2048/2/8192/prefill")
    ap.add_argument("--ladder", type=int, default=0, help="Mixed passes sized in steps of this many rows up to the "
                    "budget (0: the engine's captured sizes, steps of 256): what a finer ladder of captured passes "
                    "would give.")
    for f in dataclasses.fields(Sim):
        ap.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    args = ap.parse_args()
    sim = Sim(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Sim)})
    variants = [parse_variant(v) for v in args.variants.split(";") if v.strip()]
    if args.ladder:
        variants = [(name, dataclasses.replace(b, rows=tuple(range(args.ladder, b.max_tokens + 1, args.ladder)))
                     if b.max_tokens else b) for name, b in variants]
    print(f"{args.rate} req/s, {args.seeds} x {args.requests} requests of {args.input_len} in / {args.output_len} out")
    print(f"{'variant':<8}{'TTFT p50':>9}{'p99':>8}{'TPOT p50':>9}{'p99':>7}   TTFT p99 per seed")
    base = None
    for name, budget in variants:
        runs = [run(sim, budget, args.rate, args.requests, args.input_len, args.output_len, s)
                for s in range(args.seeds)]
        ttft = np.concatenate([r[0] for r in runs])
        tpot = np.concatenate([r[1] for r in runs])
        row = [np.percentile(ttft, 50), np.percentile(ttft, 99), np.percentile(tpot, 50), np.percentile(tpot, 99)]
        base = base or row
        per_seed = " ".join(f"{np.percentile(r[0], 99):.0f}" for r in runs)
        ratio = " ".join(f"{a / b:.2f}x" for a, b in zip(row, base))
        print(f"{name:<8}{row[0]:>9.1f}{row[1]:>8.1f}{row[2]:>9.2f}{row[3]:>7.2f}   {per_seed}   vs first: {ratio}")


if __name__ == "__main__":
    main()
