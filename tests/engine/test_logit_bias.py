"""OpenAI's `logit_bias`: added to the listed tokens' logits before the penalties and sampling; outputs against
transformers' `sequence_bias` (the same addition, before its repetition penalty too), alone and in a batch mixed
with plain, penalized and sampled requests."""
from __future__ import annotations

import re

import pytest
import torch
from transformers import AutoModelForCausalLM

from tests.conftest import CPU_OPTS
from tierlm import LLM, SamplingParams
from tierlm.engine.logit_bias import with_logit_bias
from tierlm.engine.sampler import Sampler

PROMPTS = ["the quick brown fox jumps over the lazy dog", "hello", "paris is the capital of france and berlin is"]


def test_bias_adds_to_the_listed_tokens_only():
    logits = torch.randn(3, 20, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    before = logits.clone()
    params = [SamplingParams(logit_bias={3: 5.0, 7: -100.0}), SamplingParams(), SamplingParams(logit_bias={0: 0.25})]
    out = with_logit_bias(logits, params)
    want = logits.float()
    want[0, 3] += 5.0
    want[0, 7] -= 100.0
    want[2, 0] += 0.25
    assert out.dtype == torch.float32 and torch.equal(out, want)
    assert torch.equal(logits, before), "the input logits (which logprobs read) are left as they were"


def test_sampler_follows_the_bias_greedy_and_sampled():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 32, generator=gen)
    allowed = {5: 0.0, 9: 0.0}
    ban_all_but = {t: -100.0 for t in range(32) if t not in allowed}
    params = [SamplingParams(temperature=0, logit_bias={11: 100.0}), SamplingParams(temperature=0),
              SamplingParams(temperature=1.0, logit_bias=ban_all_but), SamplingParams(temperature=0.7)]
    sampler = Sampler(torch.device("cpu"), 0)
    seen = set()
    for _ in range(50):
        tokens = sampler.sample(logits, params, [None] * 4).tolist()
        assert tokens[0] == 11 and tokens[1] == logits[1].argmax().item()
        seen.add(tokens[2])
    assert seen == set(allowed), "row 2 draws from the two tokens left unbanned, both"


@pytest.fixture(scope="module")
def hf_model(tiny_qwen3):
    return AutoModelForCausalLM.from_pretrained(tiny_qwen3, dtype=torch.float32).eval()


def hf_greedy(model, prompt: list[int], bias: dict[int, float], n: int, **kw) -> list[int]:
    with torch.no_grad():
        gen = model.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False, pad_token_id=0,
                             eos_token_id=None, sequence_bias={(t,): b for t, b in bias.items()}, **kw)
    return gen[0, len(prompt):].tolist()


def test_greedy_outputs_match_transformers_sequence_bias(tiny_qwen3, hf_model):
    llm = LLM(str(tiny_qwen3), **CPU_OPTS)
    ids = [llm.tokenizer.encode(p) for p in PROMPTS]
    plain = llm.generate(ids, SamplingParams(temperature=0, max_tokens=12, ignore_eos=True))
    # push the plain run's second token down, and another up: the outputs must move
    biases = [{o.token_ids[1]: -8.0, 17: 3.0} for o in plain]
    settings = [SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, logit_bias=biases[0]),
                SamplingParams(temperature=0, max_tokens=12, ignore_eos=True),
                SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, logit_bias=biases[2],
                               repetition_penalty=1.3)]
    ours = llm.generate(ids + ids[:1], settings + [SamplingParams(temperature=0.8, max_tokens=12, seed=3)])
    llm.close()
    assert ours[0].token_ids == hf_greedy(hf_model, ids[0], biases[0], 12)
    assert ours[1].token_ids == plain[1].token_ids, "a plain request beside biased ones is unchanged"
    assert ours[2].token_ids == hf_greedy(hf_model, ids[2], biases[2], 12, repetition_penalty=1.3)
    assert ours[0].token_ids != plain[0].token_ids and ours[2].token_ids != plain[2].token_ids


@pytest.mark.parametrize("bias, match", [({10**6: 1.0}, "token ids must be integers in"),
                                         ({3: 100.5}, r"must be in \[-100, 100\]"),
                                         ({3: float("inf")}, r"must be in \[-100, 100\]"),
                                         ({t: 1.0 for t in range(4097)}, "at most 4096 tokens")])
def test_bad_bias_is_refused_naming_the_field(tiny_qwen3, bias, match):
    llm = LLM(str(tiny_qwen3), **CPU_OPTS)
    try:
        bad, good = llm.generate([[1, 2, 3]] * 2, [SamplingParams(max_tokens=2, logit_bias=bias),
                                                   SamplingParams(max_tokens=2, ignore_eos=True)])
    finally:
        llm.close()
    assert bad.finish_reason == "error" and bad.error.startswith("logit_bias") and re.search(match, bad.error)
    assert len(good.token_ids) == 2 and not good.error
