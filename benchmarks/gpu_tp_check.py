"""GPU check of tensor parallelism: tiny random Llama, Qwen2 and Qwen3 models in fp32, greedy tokens at
--tp-size 2 (NCCL, CUDA graphs, overlap, Triton attention: the default path) against --tp-size 1, then the
same after forced eviction to the host tier.

    python benchmarks/gpu_tp_check.py
"""
from __future__ import annotations

import sys
import tempfile

import torch

from tierlm import LLM, SamplingParams
from tierlm.utils.tiny_model import make_tiny_model

PROMPTS = ["the quick brown fox", "hello world this is", "paris is the capital of france and",
           "one two three four five six seven eight nine ten eleven"] * 3


def run(path: str, tp: int) -> tuple[list, list, dict]:
    p = SamplingParams(temperature=0, max_tokens=32, ignore_eos=True)
    llm = LLM(path, tp_size=tp, dtype="float32", kv_cache_gb=0.05, page_size=4, enable_hicache=True)
    first = [o.token_ids for o in llm.generate(PROMPTS, p)]
    llm.engine.kv.drop_device_cache()
    again = [o.token_ids for o in llm.generate(PROMPTS, p)]
    info = {**llm.engine.info(), "L2_tokens": llm.engine.stats()["tier_hits"]["L2"]["tokens"]}
    llm.close()
    del llm
    torch.cuda.empty_cache()
    return first, again, info


def main() -> int:
    ok = True
    with tempfile.TemporaryDirectory() as d:
        for arch in ("llama", "qwen2", "qwen3"):
            path = str(make_tiny_model(f"{d}/{arch}", arch=arch))
            ref, _, _ = run(path, 1)
            first, again, info = run(path, 2)
            same = sum(a == b for a, b in zip(first, ref))
            same_l2 = sum(a == b for a, b in zip(again, ref))
            print(f"tiny {arch} fp32 tp2 vs tp1: {same}/{len(ref)} identical, after eviction to L2 "
                  f"{same_l2}/{len(ref)} (L2 tokens {info['L2_tokens']}; graphs {info['cuda_graph']}, "
                  f"overlap {info['overlap']}, {info['attention_backend']})")
            ok &= same == len(ref) and same_l2 == len(ref) and info["L2_tokens"] > 0
    print("TP CHECK", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
