"""GPU check of the fast path: Triton + CUDA graphs + overlap vs the torch backend, token for token.

Runs (1) tiny random models of every architecture in fp32: greedy outputs of the default CUDA path
(Triton + CUDA graphs + overlap) must equal the
torch path without graphs or overlap exactly; (2) a random-weight Qwen3-0.6B (shipped config) in bf16 on N prompts: reports per prompt the
first divergence position (if any) and the closeness of the chosen tokens' logprobs up to it.

    python benchmarks/gpu_engine_check.py [--prompts 32] [--max-tokens 64]
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile

import torch

from tierlm import LLM, SamplingParams
from tierlm.utils.tiny_model import ARCHS, make_tiny_model


def run(model: str, prompts, params, **opts):
    llm = LLM(model, **opts)
    outs = llm.generate(prompts, params)
    info = llm.engine.info()
    llm.close()
    del llm
    torch.cuda.empty_cache()
    return outs, info


def tiny_models_equal() -> bool:
    ok = True
    with tempfile.TemporaryDirectory() as d:
        for arch in ARCHS:
            path = str(make_tiny_model(f"{d}/{arch}", arch=arch))
            prompts = ["the quick brown fox", "hello world this is", "paris is the capital of france and",
                       "one two three four five six seven eight nine ten eleven"] * 3
            p = SamplingParams(temperature=0, max_tokens=32, ignore_eos=True)
            common = dict(dtype="float32", kv_cache_gb=0.05, page_size=4)
            fast, info = run(path, prompts, p, attention_backend="auto", **common)  # triton (GQA and MLA)
            ref, _ = run(path, prompts, p, attention_backend="torch", cuda_graph=False, overlap_schedule=False,
                         **common)
            same = [a.token_ids == b.token_ids for a, b in zip(fast, ref)]
            print(f"tiny {arch} fp32: {sum(same)}/{len(same)} identical  ({info})")
            ok &= all(same)
    return ok


def qwen3_bf16(n: int, max_tokens: int) -> None:
    rng = random.Random(0)
    prompts = [[rng.randrange(10000) for _ in range(rng.randint(16, 512))] for _ in range(n)]
    p = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True, detokenize=False, logprobs=1)
    common = dict(load_format="dummy", skip_tokenizer_init=True, dtype="bfloat16", max_model_len=2048,
                  kv_cache_gb=8)
    fast, info = run("builtin:qwen3-0.6b", prompts, p, attention_backend="triton", **common)
    ref, _ = run("builtin:qwen3-0.6b", prompts, p, attention_backend="torch", cuda_graph=False,
                 overlap_schedule=False, **common)
    identical, firsts, max_dlp = 0, [], 0.0
    for a, b in zip(fast, ref):
        div = next((i for i, (x, y) in enumerate(zip(a.token_ids, b.token_ids)) if x != y), None)
        upto = len(a.token_ids) if div is None else div
        for la, lb in zip(a.logprobs[:upto], b.logprobs[:upto]):
            max_dlp = max(max_dlp, abs(la.logprob - lb.logprob))
        if div is None:
            identical += 1
        else:
            firsts.append(div)
    print(f"qwen3-0.6b bf16 ({info}): {identical}/{n} prompts identical over {max_tokens} tokens; "
          f"first divergence positions {sorted(firsts)}; max |logprob diff| before divergence {max_dlp:.4f}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=64)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, device {torch.cuda.get_device_name()}")
    ok = tiny_models_equal()
    qwen3_bf16(args.prompts, args.max_tokens)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
