"""The fused token pick under penalties against the torch path, in the engine, token for token.

One engine (default Qwen3-0.6B, dummy weights, bf16 on a GPU) generates for N random prompts, every other request
greedy with repetition, presence and frequency penalties, the rest greedy without: once with the fused pick
(`kernels.race_sample`, what a CUDA device runs), once with the sampler's torch path (`PenaltyBatch.adjust`, then
argmax). Both read the same bf16 logits widened to float32 and round each penalty operation alike, so every
request's tokens must be equal; the penalized requests must also differ from a run without penalties (else the
check proves nothing). Prints one line per setting and exits 1 on a mismatch.

    python benchmarks/penalty_check.py [--model builtin:qwen3-0.6b] [--prompts 16] [--max-tokens 64]
"""
from __future__ import annotations

import argparse
import random
import sys

import torch

from tierlm import LLM, SamplingParams

PENALTIES = dict(repetition_penalty=1.3, presence_penalty=0.4, frequency_penalty=0.6)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="builtin:qwen3-0.6b")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    opts = dict(load_format="dummy", skip_tokenizer_init=True, device=args.device)
    if args.device == "cpu":
        opts.update(dtype="float32", kv_cache_gb=0.05)
    llm = LLM(args.model, **opts)
    vocab = llm.engine.model_config.vocab_size
    rng = random.Random(0)
    prompts = [[rng.randrange(vocab) for _ in range(rng.randint(8, 200))] for _ in range(args.prompts)]
    base = dict(temperature=0.0, max_tokens=args.max_tokens, ignore_eos=True, detokenize=False)
    params = [SamplingParams(**base, **(PENALTIES if i % 2 == 0 else {})) for i in range(args.prompts)]
    sampler = llm.engine.sampler
    fused_on_device = sampler._fused
    runs = {}
    for name, fused, plist in (("fused", True, params), ("torch", False, params),
                               ("plain", fused_on_device, [SamplingParams(**base)] * args.prompts)):
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
    ok = equal == args.prompts and moved == len(penalized)
    print("ok" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
