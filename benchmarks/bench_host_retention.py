"""CPU benchmark of the host tier's eviction order (`--hicache-eviction-policy`), lru against adaptive, on a
workload that changes: phase A is many conversations in turn, more than the device and host tiers hold
(LRU's worst case); phase B is a few new conversations in turn that fit (LRU's good case, and the one where
what the kept order held in phase A is in the way until it ages out). Reported per policy: prompt tokens
served from host memory (L2) in each phase, and the order the host tier ended each phase in.

Greedy decoding of a tiny model on CPU: the hit counts depend on the cache, not on the device.
Usage: `python -m tierlm make-tiny-model DIR && PYTHONPATH=. python benchmarks/bench_host_retention.py
--model DIR` (defaults: phase A 40 conversations x 4 rounds, phase B 6 x 6, first turns of 512 tokens, turns
of 64, answers of 16, a device pool of 4,080 tokens, host tier 1.5x).
"""
from __future__ import annotations

import argparse
import random

from tierlm.config import EngineConfig
from tierlm.engine.engine import Engine
from tierlm.sampling_params import SamplingParams


def phase(engine: Engine, rng: random.Random, name: str, clients: int, rounds: int, args) -> int:
    """`clients` conversations, `rounds` turns each, every client's turn after all the others'; returns the
    prompt tokens served from L2."""
    vocab = min(engine.model_config.vocab_size, 10000)
    params = SamplingParams(temperature=0.0, max_tokens=args.answer_len, ignore_eos=True, detokenize=False)
    history = [[rng.randrange(vocab) for _ in range(args.first_turn_len)] for _ in range(clients)]
    before = engine.stats()["tier_hits"]["L2"]["tokens"]
    for r in range(rounds):
        for c in range(clients):
            history[c] = history[c] + [rng.randrange(vocab) for _ in range(args.turn_len)]
            engine.add_request(f"{name}{r}-{c}", history[c], params)
            answer: list[int] = []
            while engine.has_unfinished():
                for out in engine.step():
                    answer.extend(out.new_token_ids)
            history[c] += answer
    return engine.stats()["tier_hits"]["L2"]["tokens"] - before


def run(policy: str, args) -> str:
    config = EngineConfig(model=args.model, device="cpu", dtype="float32", page_size=16, enable_hicache=True,
                          hicache_ratio=1.5, kv_cache_gb=args.kv_cache_gb, hicache_eviction_policy=policy,
                          max_model_len=8192, skip_tokenizer_init=True)
    engine = Engine(config)
    try:
        rng = random.Random(0)
        a = phase(engine, rng, "A", args.a_clients, args.a_rounds, args)
        order_a = engine.stats()["tiers"]["L2"]["eviction_order"]
        b = phase(engine, rng, "B", args.b_clients, args.b_rounds, args)
        l2 = engine.stats()["tiers"]["L2"]
        return (f"| {policy} | {a:,} | {order_a} | {b:,} | {l2['eviction_order']} | {l2['eviction_order_flips']} "
                f"| {engine.stats()['kv_total_tokens']:,} |")
    finally:
        engine.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="A model directory (e.g. from `tierlm make-tiny-model`).")
    p.add_argument("--a-clients", type=int, default=40)
    p.add_argument("--a-rounds", type=int, default=4)
    p.add_argument("--b-clients", type=int, default=6)
    p.add_argument("--b-rounds", type=int, default=6)
    p.add_argument("--first-turn-len", type=int, default=512)
    p.add_argument("--turn-len", type=int, default=64)
    p.add_argument("--answer-len", type=int, default=16)
    p.add_argument("--kv-cache-gb", type=float, default=0.0039, help="Device KV pool (default: 4,080 tokens "
                   "of the tiny model).")
    args = p.parse_args()
    print("| policy | phase A: L2 tokens | order after A | phase B: L2 tokens | order after B | flips | pool tokens |")
    print("|---|---|---|---|---|---|---|")
    for policy in ("lru", "adaptive"):
        print(run(policy, args), flush=True)


if __name__ == "__main__":
    main()
