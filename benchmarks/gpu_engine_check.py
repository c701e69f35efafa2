"""GPU check of the fast path: Triton + CUDA graphs + overlap + fused MoE vs the torch reference, token for token.

Runs (1) tiny random models of the chosen architectures in fp32: greedy outputs of the default CUDA path
(Triton attention, decode CUDA graphs, overlap, the fused MoE kernel) must equal the torch path (torch
attention, no graphs, no overlap, MoE experts by the torch reference loop) exactly; (2) a random-weight shipped
config (default Qwen3-0.6B in bf16) on N prompts: reports per prompt the first divergence position (if any)
and the closeness of the chosen tokens' logprobs up to it. In fp32 the two paths should agree token for token.
(3) the same shipped config with and without programmatic dependent launch: identical token for token.

    python benchmarks/gpu_engine_check.py [--prompts 32] [--max-tokens 64] [--archs deepseek_v2,deepseek_v3]
        [--model builtin:deepseek-v2-lite] [--dtype float32]
"""
from __future__ import annotations

import argparse
import contextlib
import os
import random
import sys
import tempfile
from unittest import mock

import torch

from tierlm import LLM, SamplingParams
from tierlm.utils.tiny_model import ARCHS, make_tiny_model


def run(model: str, prompts, params, reference: bool = False, **opts):
    """Generate with a fresh engine; `reference`: torch attention, no graphs or overlap, torch MoE experts."""
    if reference:
        opts.update(attention_backend="torch", cuda_graph=False, overlap_schedule=False)
    with torch_moe_experts() if reference else contextlib.nullcontext():
        llm = LLM(model, **opts)
        outs = llm.generate(prompts, params)
    info = llm.engine.info()
    llm.close()
    del llm
    torch.cuda.empty_cache()
    return outs, info


@contextlib.contextmanager
def torch_moe_experts():
    """MoE blocks mix their experts with the torch reference (`experts_sorted`) instead of the fused kernel."""
    from tierlm.layers.moe import StackedExperts, experts_sorted

    def reference(self, x, weights, ids, add=None):
        out = experts_sorted(x, self.experts_gate_up, self.experts_down, weights, ids)
        return out if add is None else out + add

    with mock.patch.object(StackedExperts, "experts", reference):
        yield


# "ARCH+VARIANT" in --archs: the tiny model of ARCH with these config overrides
VARIANTS = {"yarn": dict(rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8})}


def tiny_models_equal(archs) -> bool:
    ok = True
    with tempfile.TemporaryDirectory() as d:
        for arch in archs:
            base, _, variant = arch.partition("+")
            path = str(make_tiny_model(f"{d}/{arch}", arch=base, **VARIANTS.get(variant, {})))
            prompts = ["the quick brown fox", "hello world this is", "paris is the capital of france and",
                       "one two three four five six seven eight nine ten eleven"] * 3
            p = SamplingParams(temperature=0, max_tokens=32, ignore_eos=True)
            common = dict(dtype="float32", kv_cache_gb=0.05, page_size=4)
            # 12 prompts, then 2: decode batches of a few tokens take other launches (the MoE's pair kernels)
            for batch in (prompts, prompts[:2]):
                fast, info = run(path, batch, p, attention_backend="auto", **common)  # triton (GQA and MLA)
                ref, _ = run(path, batch, p, reference=True, **common)
                same = [a.token_ids == b.token_ids for a, b in zip(fast, ref)]
                print(f"tiny {arch} fp32: {sum(same)}/{len(same)} identical, cuda_graph {info['cuda_graph']}, "
                      f"{info['attention_backend']}  ({info})")
                ok &= all(same) and info["cuda_graph"]  # every architecture's decode is captured
    return ok


def shipped_check(model: str, dtype: str, n: int, max_tokens: int) -> None:
    rng = random.Random(0)
    prompts = [[rng.randrange(10000) for _ in range(rng.randint(16, 512))] for _ in range(n)]
    p = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True, detokenize=False, logprobs=1)
    common = dict(load_format="dummy", skip_tokenizer_init=True, dtype=dtype, max_model_len=2048, kv_cache_gb=4)
    fast, info = run(model, prompts, p, attention_backend="auto", **common)
    ref, _ = run(model, prompts, p, reference=True, **common)
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
    print(f"{model} {dtype} ({info}): {identical}/{n} prompts identical over {max_tokens} tokens; "
          f"first divergence positions {sorted(firsts)}; max |logprob diff| before divergence {max_dlp:.4f}")


def pdl_identical(model: str, dtype: str, n: int, max_tokens: int) -> bool:
    """The fast path with programmatic dependent launch and without it (`TIERLM_PDL=0`): only the launches
    differ, so greedy outputs must be identical token for token."""
    from tierlm.kernels.pdl import ENV

    rng = random.Random(1)
    prompts = [[rng.randrange(10000) for _ in range(rng.randint(16, 512))] for _ in range(n)]
    p = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True, detokenize=False)
    common = dict(load_format="dummy", skip_tokenizer_init=True, dtype=dtype, max_model_len=2048, kv_cache_gb=4)
    outs = {}
    for flag in ("1", "0"):
        os.environ[ENV] = flag
        outs[flag], _ = run(model, prompts, p, **common)
    os.environ.pop(ENV)
    same = sum(a.token_ids == b.token_ids for a, b in zip(outs["1"], outs["0"]))
    print(f"{model} {dtype}: PDL on vs off: {same}/{n} prompts identical over {max_tokens} tokens")
    return same == n


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--archs", default=",".join(ARCHS) + ",qwen3+yarn",
                    help="tiny architectures to check (comma list; ARCH+yarn: under a YaRN rope scaling)")
    ap.add_argument("--model", default="builtin:qwen3-0.6b", help="shipped config of the dummy-weight check")
    ap.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"), help="its dtype")
    args = ap.parse_args()
    archs = [a for a in args.archs.split(",") if a]
    bad = [a for a in archs if a.partition("+")[0] not in ARCHS or a.partition("+")[2] not in ("", *VARIANTS)]
    if bad:
        print(f"--archs: {', '.join(bad)}: pick from {', '.join(ARCHS)}, each optionally +{'/+'.join(VARIANTS)}",
              file=sys.stderr)
        return 2
    print(f"torch {torch.__version__}, device {torch.cuda.get_device_name()}")
    ok = tiny_models_equal(archs)
    shipped_check(args.model, args.dtype, args.prompts, args.max_tokens)
    ok &= pdl_identical(args.model, args.dtype, args.prompts, args.max_tokens)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
