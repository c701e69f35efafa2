"""The fused token pick under penalties against the torch path, in the engine, token for token.

One engine (default Qwen3-0.6B, dummy weights, bf16 on a GPU) generates for N random prompts, every other request
greedy with repetition, presence and frequency penalties, the rest greedy without: once with the fused pick
(`kernels.race_sample`, what a CUDA device runs), once with the sampler's torch path (`PenaltyBatch.adjust`, then
argmax). Both read the same bf16 logits widened to float32 and round each penalty operation alike, so every
request's tokens must be equal; the penalized requests must also differ from a run without penalties (else the
check proves nothing). The prefix cache is off, so every run prefills its prompts whole. `--sampler-steps N`
checks the sampler alone (no model): N passes over fixed logits. Prints one line per setting and exits 1 on a
mismatch.

    python benchmarks/penalty_check.py [--model builtin:qwen3-0.6b] [--prompts 16] [--max-tokens 64]
"""
from __future__ import annotations

import argparse
import json
import random
import sys

import torch

from tierlm import LLM, SamplingParams
from llm_options import probe_options  # a sibling module: this directory is first on the path of a script

PENALTIES = dict(repetition_penalty=1.3, presence_penalty=0.4, frequency_penalty=0.6)


def sampler_steps(device: str, steps: int, batch: int, vocab: int, fused: bool) -> torch.Tensor:
    """`steps` passes of the engine's sampler alone (its penalties and sink, no model) over fixed random bf16
    logits: the tokens `[steps, batch]`, every other row penalized."""
    from types import SimpleNamespace

    from tierlm.engine.penalties import Penalties
    from tierlm.engine.sampler import Sampler
    from tierlm.kvcache.req_table import TokenSink

    gen = torch.Generator().manual_seed(1)
    dev = torch.device(device)
    sampler, pen = Sampler(dev, 0, fused_penalties=fused), Penalties(dev)
    reqs = []
    for i in range(batch):
        p = SamplingParams(temperature=0.0, **(PENALTIES if i % 2 == 0 else {}))
        prompt = torch.randint(0, vocab, (50,), generator=gen).tolist()
        reqs.append(SimpleNamespace(token_ids=prompt, prompt_len=50, params=p, penalized=p.penalized,
                                    penalty_row=None, finished=False))
        pen.expect(reqs[-1])
    table = torch.zeros(batch, steps, dtype=torch.int32, device=dev)
    rows = torch.arange(batch, dtype=torch.int32, device=dev)
    base = (torch.randn(batch, vocab, generator=gen) * 2).to(torch.bfloat16).to(dev)
    for step in range(steps):
        logits = base + (step % 3)  # a few distinct passes; the penalties move the rest
        sink = TokenSink(table, rows, torch.full((batch,), step, dtype=torch.int32, device=dev))
        sampler.sample(logits, [r.params for r in reqs], [None] * batch, sink, pen.batch(reqs, vocab))
    return table.T.cpu()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="builtin:qwen3-0.6b")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None, help="The model's dtype (default: the engine's; float32 on the CPU).")
    ap.add_argument("--sampler-steps", type=int, default=0,
                    help="Only the sampler, no model: this many passes, fused pick against torch, twice each.")
    ap.add_argument("--engine-opts", default="{}",
                    help="More engine options, as JSON (e.g. '{\"cuda_graph\": false}').")
    ap.add_argument("--repeat", action="store_true",
                    help="Also run each setting a second time: how far runs of one setting agree.")
    args = ap.parse_args()
    if args.sampler_steps:
        runs = {(f, k): sampler_steps(args.device, args.sampler_steps, args.prompts, 151936, f)
                for f in (True, False) for k in range(2)}
        for name, (a, b) in {"fused twice": ((True, 0), (True, 1)), "torch twice": ((False, 0), (False, 1)),
                             "fused vs torch": ((True, 0), (False, 0))}.items():
            same = torch.equal(runs[a], runs[b])
            diff = (runs[a] != runs[b]).nonzero()
            print(f"sampler alone, {name}: {'identical' if same else f'first difference at {diff[0].tolist()}'}")
        return 0 if all(torch.equal(runs[(True, 0)], r) for r in runs.values()) else 1
    # every run starts cold: with the prefix cache, runs after the first would prefill their prompts' cached pages
    # no more, and a bf16 extend over a cached prefix rounds otherwise than a whole prompt's prefill
    opts = {**probe_options(args.device), "enable_prefix_cache": False}
    if args.dtype:
        opts["dtype"] = args.dtype
    opts.update(json.loads(args.engine_opts))
    llm = LLM(args.model, **opts)
    vocab = llm.engine.model_config.vocab_size
    rng = random.Random(0)
    prompts = [[rng.randrange(vocab) for _ in range(rng.randint(8, 200))] for _ in range(args.prompts)]
    base = dict(temperature=0.0, max_tokens=args.max_tokens, ignore_eos=True, detokenize=False)
    params = [SamplingParams(**base, **(PENALTIES if i % 2 == 0 else {})) for i in range(args.prompts)]
    sampler = llm.engine.sampler
    fused_on_device = sampler._fused
    sampler.fused_penalties = True  # the check itself: the penalized kernel against the torch path
    if fused_on_device:
        sampler.warm_up(vocab, llm.engine.worker.runner.dtype)  # its variants, built outside the runs
    runs = {}
    settings = [("fused", True, params), ("torch", False, params),
                ("plain", fused_on_device, [SamplingParams(**base)] * args.prompts)]
    for name, fused, plist in settings + ([(f"{n} again", f, p) for n, f, p in settings] if args.repeat else []):
        sampler._fused = fused and fused_on_device
        runs[name] = [o.token_ids for o in llm.generate(prompts, plist)]
    sampler._fused = fused_on_device
    llm.close()
    penalized = range(0, args.prompts, 2)
    equal = sum(a == b for a, b in zip(runs["fused"], runs["torch"]))
    moved = sum(runs["fused"][i] != runs["plain"][i] for i in penalized)
    untouched = sum(runs["fused"][i] == runs["plain"][i] for i in range(1, args.prompts, 2))
    print(f"device {torch.cuda.get_device_name() if args.device == 'cuda' else 'cpu'}, fused pick on the device: "
          f"{fused_on_device}")
    print(f"fused vs torch path: {equal}/{args.prompts} requests identical over {args.max_tokens} tokens")
    print(f"penalized requests changed by their penalties: {moved}/{len(penalized)}; requests without penalties "
          f"as in the run without any: {untouched}/{args.prompts - len(penalized)}")
    firsts = [(i, next((k for k, (a, b) in enumerate(zip(f, t)) if a != b), None))
              for i, (f, t) in enumerate(zip(runs["fused"], runs["torch"]))]
    print("first difference, fused vs torch (request: position; p = penalized): " + ", ".join(
        f"{i}{'p' if i % 2 == 0 else ''}: {k}" for i, k in firsts if k is not None))
    for name, _, _ in settings if args.repeat else []:
        same = sum(a == b for a, b in zip(runs[name], runs[f"{name} again"]))
        print(f"{name} run twice: {same}/{args.prompts} requests identical")
    ok = equal == args.prompts and moved == len(penalized)
    print("ok" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
