"""Multi-turn conversations against an OpenAI-compatible URL (one server, or a gateway in front of several).

N conversations of R rounds each: round 1 sends a long first user message, every later round sends the whole
conversation so far (earlier user messages and the server's answers) plus a short new user message, so each
prompt extends the last one of its conversation and a prefix cache, local or shared, can serve most of it.
Rounds run in waves: every conversation sends round r, at most --concurrency requests in flight, before any
sends round r+1. Within a round the conversations go in a random (seeded) order, so a round-robin gateway sends
the turns of one conversation to replicas at random rather than to the same one every round. Messages are random
words from a list of common English words (about one token each in the usual tokenizers): lengths are given in
words, and the report shows the prompt tokens the server counted.

Requests go to /v1/chat/completions, streaming, temperature 0, `ignore_eos` and `max_tokens` = --answer-len,
with `stream_options.include_usage` so the last chunk carries `usage.prompt_tokens_details.cached_tokens`.
Reports per round TTFT p50/p99 and the share of prompt tokens served from a cache, and overall requests/s
and output tokens/s. A failed request is counted (its conversation sends no later round), never raised.

    python benchmarks/fleet_multiturn.py --url http://127.0.0.1:30000 --num-conversations 32 --num-rounds 4
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import random
import sys
import time
from typing import Any, Optional

import aiohttp

from tierlm.cli.bench.serve_client import CHAT, RequestResult, Target, send, served_model
from tierlm.cli.bench.serve_data import BenchRequest
from tierlm.cli.bench.serve_metrics import stats
from tierlm.cli.errors import CLIError

WORDS = ("a all and answer at but cache count down eight every fast five flow four good hello in is it keeps "
         "language memory model morning never night nine nothing numbers of on once one over page please "
         "question quick reading serving seven six small system ten thank the this three through tiny tokens "
         "twice two up user warm while words world you").split()


def conversations(num: int, rounds: int, first_len: int, turn_len: int, seed: int) -> list[list[str]]:
    """turns[conversation][round]: the user messages, random words (seeded; every conversation its own)."""
    rng = random.Random(seed)
    return [[" ".join(rng.choice(WORDS) for _ in range(first_len if r == 0 else turn_len)) for r in range(rounds)]
            for _ in range(num)]


async def play(session: aiohttp.ClientSession, target: Target, turns: list[list[str]], answer_len: int,
               concurrency: int, seed: int) -> list[list[RequestResult]]:
    """Every conversation round after round; each answer joins the messages of its conversation's next round.
    Returns the results of each round (in the order sent)."""
    rng, sem, t0 = random.Random(seed), asyncio.Semaphore(concurrency), time.perf_counter()
    messages: list[list[dict[str, str]]] = [[] for _ in turns]
    going = list(range(len(turns)))  # a conversation whose request failed cannot go on: its later rounds are skipped
    per_round: list[list[RequestResult]] = []

    async def turn(c: int) -> RequestResult:
        async with sem:  # tasks reach the semaphore in creation order: requests go out in the shuffled order
            return await send(session, target, BenchRequest(list(messages[c]), None, answer_len), t0)

    for r in range(len(turns[0]) if turns else 0):
        rng.shuffle(going)
        for c in going:
            messages[c].append({"role": "user", "content": turns[c][r]})
        results = await asyncio.gather(*(turn(c) for c in going))
        per_round.append(list(results))
        for c, res in zip(going, results):
            messages[c].append({"role": "assistant", "content": res.text})
        going = [c for c, res in zip(going, results) if res.ok]
    return per_round


def summarize(per_round: list[list[RequestResult]], num: int, elapsed: float) -> dict[str, Any]:
    """Per-round TTFT and cache share, overall throughput and failures."""
    rounds, everything = [], [res for rs in per_round for res in rs]
    for r, rs in enumerate(per_round):
        ok = [x for x in rs if x.ok]
        reported = [x for x in ok if x.cached_tokens is not None]
        prompt = sum(x.prompt_len or 0 for x in reported)
        ttft = stats([x.ttft for x in ok])
        rounds.append({"round": r + 1, "completed": len(ok), "failed": len(rs) - len(ok), "skipped": num - len(rs),
                       "ttft_ms": {"p50": ttft["p50"], "p99": ttft["p99"]},
                       "mean_prompt_tokens": sum(x.prompt_len or 0 for x in ok) / len(ok) if ok else None,
                       "cached_share": sum(x.cached_tokens or 0 for x in reported) / prompt if prompt else None})
    ok = [x for x in everything if x.ok]
    reported = [x for x in ok if x.cached_tokens is not None]
    prompt = sum(x.prompt_len or 0 for x in reported)
    errors = collections.Counter(x.error for x in everything if not x.ok)
    return {"rounds": rounds, "completed": len(ok), "failed": len(everything) - len(ok),
            "skipped": num * len(per_round) - len(everything), "elapsed_s": elapsed,
            "requests_per_s": len(ok) / elapsed if elapsed > 0 else None,
            "output_tok_per_s": sum(x.output_len for x in ok) / elapsed if elapsed > 0 else None,
            "prompt_tokens": sum(x.prompt_len or 0 for x in ok),
            "cached_share": sum(x.cached_tokens or 0 for x in reported) / prompt if prompt else None,
            "usage_without_cached_tokens": len(ok) - len(reported), "errors": dict(errors.most_common(5))}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    base = args.url.rstrip("/")
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    timeout = aiohttp.ClientTimeout(total=args.request_timeout)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
        model = args.model or await served_model(session, base, headers)
        target = Target(base + CHAT, CHAT, model, headers)
        turns = conversations(args.num_conversations, args.num_rounds, args.first_turn_len, args.turn_len, args.seed)
        t0 = time.perf_counter()
        per_round = await play(session, target, turns, args.answer_len, args.concurrency, args.seed)
        elapsed = time.perf_counter() - t0
    config = {k: getattr(args, k) for k in ("url", "num_conversations", "num_rounds", "first_turn_len", "turn_len",
                                            "answer_len", "concurrency", "seed")}
    return {"config": {**config, "model": model}, **summarize(per_round, args.num_conversations, elapsed)}


def _fmt(v: Optional[float], spec: str) -> str:
    return "-" if v is None else format(v, spec)


def print_report(s: dict[str, Any]) -> None:
    print(f"{'round':>5}{'done':>6}{'failed':>8}{'skipped':>9}{'prompt tok':>12}{'cached':>8}"
          f"{'TTFT p50 ms':>13}{'TTFT p99 ms':>13}")
    for r in s["rounds"]:
        print(f"{r['round']:>5}{r['completed']:>6}{r['failed']:>8}{r['skipped']:>9}"
              f"{_fmt(r['mean_prompt_tokens'], '.0f'):>12}{_fmt(r['cached_share'], '.1%'):>8}"
              f"{_fmt(r['ttft_ms']['p50'], '.1f'):>13}{_fmt(r['ttft_ms']['p99'], '.1f'):>13}")
    print(f"completed {s['completed']}, failed {s['failed']}, skipped {s['skipped']} in {s['elapsed_s']:.1f} s: "
          f"{_fmt(s['requests_per_s'], '.2f')} req/s, {_fmt(s['output_tok_per_s'], '.0f')} output tok/s, "
          f"cached share {_fmt(s['cached_share'], '.1%')}")
    if s["usage_without_cached_tokens"]:
        print(f"{s['usage_without_cached_tokens']} answers carried no usage.prompt_tokens_details.cached_tokens")
    for msg, n in s["errors"].items():
        print(f"{n} x {msg}")


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:30000", help="Server or gateway URL (default: %(default)s).")
    p.add_argument("--model", help="Model name sent in requests (default: the first of GET /v1/models).")
    p.add_argument("--api-key", help="Sent as 'Authorization: Bearer KEY'.")
    p.add_argument("--num-conversations", type=int, default=32, help="Conversations (default: %(default)s).")
    p.add_argument("--num-rounds", type=int, default=4, help="Rounds (user turns) each (default: %(default)s).")
    p.add_argument("--first-turn-len", type=int, default=2000, help="Words of round 1 (default: %(default)s).")
    p.add_argument("--turn-len", type=int, default=200, help="Words of each later user turn (default: %(default)s).")
    p.add_argument("--answer-len", type=int, default=64, help="Tokens of each answer (default: %(default)s).")
    p.add_argument("--concurrency", type=int, default=8, help="Requests in flight at most (default: %(default)s).")
    p.add_argument("--seed", type=int, default=0, help="Seed of the messages (default: %(default)s).")
    p.add_argument("--request-timeout", type=float, default=600.0, help="Seconds per request (default: %(default)s).")
    p.add_argument("--json", action="store_true", help="Print the report as one JSON object.")
    args = p.parse_args(argv)
    for flag in ("num_conversations", "num_rounds", "first_turn_len", "turn_len", "answer_len", "concurrency"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if not args.url.startswith(("http://", "https://")):
        p.error(f"--url {args.url!r}: expected an http:// or https:// URL")
    return args


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    try:
        summary = asyncio.run(run(args))
    except CLIError as e:
        print(f"fleet_multiturn: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary))
    else:
        print_report(summary)
    return 0 if summary["completed"] else 1


if __name__ == "__main__":
    sys.exit(main())
