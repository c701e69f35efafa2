"""Prompt logprobs against the engine's own decode logprobs, and what scoring a long prompt costs.

One engine (default Qwen3-0.6B, dummy weights, bf16 on a GPU) generates greedy tokens with their logprobs for
random prompts; then it scores each prompt followed by those tokens (`prompt_logprobs`): the scores of the
generated positions come from a prefill pass (eager or the piecewise prefill graphs), the decode logprobs from
decode steps (CUDA graphs), so they agree to the dtype's rounding, and every greedy token is ranked 1 (or tied).
Then the time to the first token of one long prompt, plain and scored (the host waits for a scored pass and the
LM head runs over every position); with `--ab`, the scored runs also with the log-softmax written out (the first
version's `score`, kept here) in place of the engine's. Prints a short table; exits 1 when the scores disagree.

    python benchmarks/prompt_logprobs_check.py [--model builtin:qwen3-0.6b] [--prompts 8] [--long 8192] [--ab]
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time

import torch

from tierlm import LLM, SamplingParams
from tierlm.engine import model_runner
from tierlm.engine.prompt_logprobs import SCORE_SLICE, Scores
from llm_options import probe_options  # a sibling module: this directory is first on the path of a script


def written_out(compute_logits, hidden, index, targets, top) -> Scores:
    """The first version of `prompt_logprobs.score`: the float32 log-softmax written out per slice."""
    chosen, rank, values, ids = [], [], [], []
    for s in range(0, index.numel(), SCORE_SLICE):
        lp = torch.log_softmax(compute_logits(hidden[index[s:s + SCORE_SLICE]]).float(), dim=-1)
        got = lp.gather(1, targets[s:s + SCORE_SLICE, None])
        chosen.append(got.squeeze(1))
        rank.append((lp > got).sum(dim=-1) + 1)
        if top:
            v, i = lp.topk(top, dim=-1)
            values.append(v)
            ids.append(i)
    return Scores(torch.cat(chosen), torch.cat(rank), torch.cat(values) if top else None,
                  torch.cat(ids) if top else None)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="builtin:qwen3-0.6b")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--long", type=int, default=8192, help="Tokens of the long prompt timed plain and scored.")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tolerance", type=float, default=None, help="Largest difference allowed (default: 0.1 in bf16, "
                    "1e-3 in float32).")
    ap.add_argument("--engine-opts", default="{}", help="More engine options, as JSON.")
    ap.add_argument("--ab", action="store_true", help="Also time the scored runs with the log-softmax written out.")
    args = ap.parse_args()
    opts = {**probe_options(args.device), "enable_prefix_cache": False, **json.loads(args.engine_opts)}
    llm = LLM(args.model, **opts)
    vocab = llm.engine.model_config.vocab_size
    rng = random.Random(0)
    longest = min(600, llm.engine.max_model_len - args.max_tokens - 1)
    prompts = [[rng.randrange(vocab) for _ in range(rng.randint(16, longest))] for _ in range(args.prompts)]
    gen = llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=args.max_tokens, ignore_eos=True,
                                               detokenize=False, logprobs=1))
    scored = llm.generate([p + o.token_ids for p, o in zip(prompts, gen)],
                          SamplingParams(temperature=0.0, max_tokens=1, detokenize=False, prompt_logprobs=1))
    worst, ranks = 0.0, []
    for p, o, s in zip(prompts, gen, scored):
        tail = s.prompt_logprobs[len(p):]
        worst = max([worst] + [abs(a.logprob - b.logprob) for a, b in zip(tail, o.logprobs)])
        ranks += [lp.rank for lp in tail]
    long = [rng.randrange(vocab) for _ in range(min(args.long, llm.engine.max_model_len - 1))]
    times: dict[str, list[float]] = {}
    engine_score = model_runner.score
    variants = [("plain", {}, engine_score), ("scored", {"prompt_logprobs": 0}, engine_score)]
    if args.ab:
        variants.append(("scored, log-softmax written out", {"prompt_logprobs": 0}, written_out))
    for _ in range(3):  # rounds alternate the variants
        for name, extra, fn in variants:
            model_runner.score = fn
            t = time.perf_counter()
            llm.generate([long], SamplingParams(temperature=0.0, max_tokens=1, detokenize=False, **extra))
            times.setdefault(name, []).append((time.perf_counter() - t) * 1e3)
    model_runner.score = engine_score
    dtype = llm.engine.worker.runner.dtype
    llm.close()
    tolerance = args.tolerance if args.tolerance is not None else (1e-3 if dtype == torch.float32 else 0.1)
    device = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(f"device {device}, {args.model}, {dtype}, {args.prompts} prompts x {args.max_tokens} generated tokens")
    print(f"scored generated positions against their decode logprobs: largest difference {worst:.5f} "
          f"(tolerance {tolerance}); greedy tokens ranked 1: {sum(r == 1 for r in ranks)}/{len(ranks)}, "
          f"largest rank {max(ranks)}")
    print(f"| long prompt of {len(long)} tokens, one output token | ms, three rounds |")
    print("|---|---|")
    for name, ms in times.items():
        print(f"| {name} | {' / '.join(f'{m:.1f}' for m in ms)} |")
    ok = worst <= tolerance
    print("ok" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
