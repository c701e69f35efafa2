"""Poisson arrivals replayed straight into one engine, under several mixed-step sizings, without HTTP.

`tierlm bench serve` measures a server; this measures the engine's scheduling alone, with the same arrival
process (`arrival_offsets`) and the same figures (`summarize`: TTFT from the request's arrival at the engine,
TPOT, ITL), so the sizings of mixed steps can be compared in one process on one set of captured graphs: the
engine starts once with mixed steps on at the largest budget asked for (off if every variant is), and each
variant swaps the scheduler's `MixedBudget` (max_tokens 0: mixed steps off, as a server without
`--enable-mixed-chunk`). Every variant gets the same arrival times and prompts of its own (no prefix-cache
hits from an earlier variant). Per variant it also counts the steps by kind and the prefill tokens of the
mixed steps.

    PYTHONPATH=. python benchmarks/replay_arrivals.py --model builtin:llama-3.1-8b --rate 18.85 --duration 14 \
        --variants "off=0/0/0;on=2048/4/4096;k0=2048/0/0" [--input-len 1024 --output-len 256] [ENGINE FLAGS]

A variant is NAME=MAX_TOKENS/BACKLOG_STEPS/BURST_TOKENS[/prefill] (the fields of `MixedBudget`; "/prefill" sets
`burst_prefill`).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import random
import time

from tierlm.cli.args import add_engine_args, config_from_args
from tierlm.cli.bench.serve_client import RequestResult, arrival_offsets
from tierlm.cli.bench.serve_metrics import summarize
from tierlm.engine.engine import Engine
from tierlm.engine.mixed_budget import MixedBudget
from tierlm.engine.mixed_graph import DECODE_STEP, token_sizes
from tierlm.sampling_params import SamplingParams


def parse_variant(spec: str, decode_align: int = DECODE_STEP) -> tuple[str, MixedBudget]:
    """NAME=MAX_TOKENS/BACKLOG_STEPS/BURST_TOKENS[/prefill] -> (NAME, its `MixedBudget`; max_tokens 0: off)."""
    name, _, fields = spec.strip().partition("=")
    parts = fields.split("/")
    budget, steps, burst = (int(x) for x in parts[:3])
    if budget == 0:
        return name, MixedBudget()
    return name, MixedBudget(budget, decode_align, tuple(token_sizes(budget)), steps, burst, parts[3:] == ["prefill"])


def replay(engine: Engine, prompts: list[list[int]], offsets: list[float], output_len: int, tag: str,
           trace: bool = False) -> dict:
    """Add each prompt at its offset, step the engine until every request finished; the `summarize` report
    plus step counts by kind, the mean TTFT by how many requests arrived in the 200 ms up to each one, and
    with `trace` every scheduled pass (seconds from the start, kind, decodes, prefill tokens, requests
    waiting) and every request's arrival and TTFT."""
    sched = engine.scheduler
    kinds: dict[str, int] = {}
    mixed_prefill: list[int] = []
    prefilled = [0]
    passes: list[tuple] = []
    schedule = sched.schedule

    def counting():
        got, refused = schedule()
        if got is not None:
            kinds[got.mode] = kinds.get(got.mode, 0) + 1
            tokens = sum(n for r, n in zip(got.reqs, got.extend_lens) if r.prefilling)
            prefilled[0] += tokens
            if got.mode == "mixed":
                mixed_prefill.append(tokens)
            if trace:
                passes.append((round(time.perf_counter() - t0, 5), got.mode,
                               sum(not r.prefilling for r in got.reqs), tokens, len(sched.waiting)))
        return got, refused

    sched.schedule = counting
    params = SamplingParams(temperature=0.0, max_tokens=output_len, ignore_eos=True, detokenize=False)
    results = [RequestResult(prompt_len=len(p)) for p in prompts]
    last = [0.0] * len(prompts)
    ids = {f"{tag}-{i}": i for i in range(len(prompts))}
    engine.clock.reset()
    done, i, t0 = 0, 0, time.perf_counter()
    while done < len(prompts):
        now = time.perf_counter() - t0
        while i < len(prompts) and offsets[i] <= now:
            results[i].sent = now
            engine.add_request(f"{tag}-{i}", prompts[i], params)
            i += 1
        if not engine.has_unfinished():
            time.sleep(min(0.001, max(0.0, offsets[i] - now)))
            continue
        outs = engine.step()
        now = time.perf_counter() - t0
        for o in outs:
            k = ids[o.request_id]
            r = results[k]
            if o.new_token_ids:
                if r.output_len == 0:
                    r.ttft = now - r.sent
                else:
                    r.itl.append(now - last[k])
                last[k] = now
                r.output_len += len(o.new_token_ids)
            if o.finished:
                r.ok, r.latency = o.error is None, now - r.sent
                r.error = o.error or ""
                done += 1
    duration = time.perf_counter() - t0
    sched.schedule = schedule
    report = summarize(results, duration)
    report["steps"] = kinds
    report["step_host"] = engine.clock.snapshot()  # host ms per step and phase, as a server's /stats gives
    report["mixed_prefill_mean"] = sum(mixed_prefill) / len(mixed_prefill) if mixed_prefill else 0.0
    report["prefill_tokens"] = prefilled[0]  # computed, not found in the prefix cache
    report["ttft_ms_by_arrivals"] = ttft_by_arrivals(results)
    if trace:
        report["trace"] = {"passes": passes, "requests": [(round(r.sent, 5), round(r.ttft * 1e3, 2))
                                                          for r in results]}
    return report


def ttft_by_arrivals(results: list[RequestResult], window: float = 0.2) -> dict[int, float]:
    """Mean TTFT (ms) of the requests by how many arrived in the `window` seconds up to each (itself
    included): how a sizing treats lone prompts against bursts."""
    sent = [r.sent for r in results]
    groups: dict[int, list[float]] = {}
    for r in results:
        if r.ttft:
            n = sum(r.sent - window < s <= r.sent for s in sent)
            groups.setdefault(n, []).append(r.ttft * 1e3)
    return {n: round(sum(v) / len(v), 1) for n, v in sorted(groups.items())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, required=True, help="Requests per second (Poisson).")
    ap.add_argument("--duration", type=float, default=14.0, help="Seconds of arrivals per variant.")
    ap.add_argument("--input-len", type=int, default=1024)
    ap.add_argument("--output-len", type=int, default=256)
    ap.add_argument("--variants", default="off=0/0/0;on=2048/4/4096", help="NAME=MAX_TOKENS/BACKLOG_STEPS/"
                    "BURST_TOKENS;... (see the module doc).")
    ap.add_argument("--json", help="Write every report to this file.")
    ap.add_argument("--trace", action="store_true", help="Put every pass and request in the JSON report.")
    add_engine_args(ap, model_required=False)
    ap.set_defaults(model="builtin:qwen3-0.6b", load_format="dummy", skip_tokenizer_init=True)
    args = ap.parse_args()
    variants = [parse_variant(v) for v in args.variants.split(";") if v.strip()]
    config = config_from_args(args)
    budget = max(v.max_tokens for _, v in variants)  # 0: every variant has mixed steps off
    config = config.replace(enable_mixed_chunk=budget > 0, max_mixed_tokens=budget or config.max_mixed_tokens,
                            max_model_len=config.max_model_len or args.input_len + args.output_len + 64)
    engine = Engine(config)
    base = engine.scheduler.mixed
    vocab = min(engine.model_config.vocab_size, 30000)
    n = max(32, round(args.rate * args.duration))
    offsets = arrival_offsets(n, args.rate, args.seed)

    def prompts(seed: int) -> list[list[int]]:  # fresh prompts for each run: no prefix-cache hits across runs
        rng = random.Random(seed)
        return [[rng.randrange(vocab) for _ in range(args.input_len)] for _ in range(n)]

    warm = max(8, n // 8)  # first use of each pass size builds nothing (graphs are captured), but let it settle
    replay(engine, prompts(args.seed + 1000)[:warm], offsets[:warm], 16, "warm")
    reports = {}
    for j, (name, budget) in enumerate(variants):  # the engine's own decode alignment (1 without mixed graphs)
        engine.scheduler.mixed = dataclasses.replace(budget, decode_align=base.decode_align) if budget.max_tokens \
            else budget
        reports[name] = replay(engine, prompts(args.seed + j), offsets, args.output_len, name, args.trace)
    engine.close()
    if args.json:
        json.dump(reports, open(args.json, "w"), indent=1)
    print(f"{args.rate} req/s, {n} requests of {args.input_len} in / {args.output_len} out, {config.model}")
    print(f"{'variant':<10}{'out tok/s':>10}{'TTFT p50/p99 ms':>18}{'TPOT p50/p99 ms':>18}{'ITL p99':>9}"
          f"{'steps d/m/p':>16}{'mixed prefill':>14}")
    for name, s in reports.items():
        st = s["steps"]
        print(f"{name:<10}{s['output_tok_per_s']:>10.0f}{s['ttft_ms']['p50']:>9.1f}/{s['ttft_ms']['p99']:<8.1f}"
              f"{s['tpot_ms']['p50']:>9.2f}/{s['tpot_ms']['p99']:<8.2f}{s['itl_ms']['p99']:>9.2f}"
              f"{st.get('decode', 0):>6}/{st.get('mixed', 0)}/{st.get('prefill', 0):<6}"
              f"{s['mixed_prefill_mean']:>10.0f}")
    print("mean TTFT ms by requests arriving in the 200 ms up to each (count: ms):")
    for name, s in reports.items():
        print(f"{name:<10}" + " ".join(f"{n}:{ms:.0f}" for n, ms in s["ttft_ms_by_arrivals"].items()))
    off = reports.get("off")
    if off:
        for name, s in reports.items():
            if name != "off":
                r = lambda k, q: s[k][q] / off[k][q]
                print(f"{name}/off: TPOT p50 {r('tpot_ms', 'p50'):.2f}x p99 {r('tpot_ms', 'p99'):.2f}x, TTFT p50 "
                      f"{r('ttft_ms', 'p50'):.2f}x p99 {r('ttft_ms', 'p99'):.2f}x, out tok/s "
                      f"{s['output_tok_per_s'] / off['output_tok_per_s']:.2f}x")


if __name__ == "__main__":
    main()
