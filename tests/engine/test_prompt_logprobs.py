"""Prompt logprobs (`SamplingParams.prompt_logprobs`): each prompt token's logprob, rank and top-N equal
transformers' log-softmax over the same prompt, whole or over chunked prefill passes, beside requests without them,
after an earlier request cached the same prompt, and under tensor parallelism (two gloo ranks); a position is
scored once even when its request runs its prompt again."""
from __future__ import annotations

import pytest
import torch

from tests.conftest import CPU_OPTS
from tierlm import LLM, SamplingParams
from tierlm.engine.outputs import TokenLogprob
from tierlm.engine.prompt_logprobs import match_limit, plan_fields, score_spans
from tierlm.engine.request import Req
from tierlm.errors import RequestError

PROMPT = [5, 17, 99, 3, 250, 41, 8, 77, 120, 9, 33, 61, 200, 14, 2, 88, 301, 7, 45]


def _reference(model_dir, prompt):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    with torch.no_grad():
        return torch.log_softmax(hf(torch.tensor([prompt])).logits[0].float(), dim=-1)


def _check(got, prompt, ref, n):
    assert len(got) == len(prompt) and got[0] is None
    for k in range(1, len(prompt)):
        lp, row = got[k], ref[k - 1]
        assert lp.token_id == prompt[k]
        assert lp.logprob == pytest.approx(row[prompt[k]].item(), abs=1e-4)
        assert lp.rank == int((row > row[prompt[k]]).sum()) + 1
        values, ids = row.topk(n)
        assert [t for t, _ in lp.top] == ids.tolist()
        assert [v for _, v in lp.top] == pytest.approx(values.tolist(), abs=1e-4)


@pytest.mark.parametrize("arch, chunk", [("qwen3", None), ("qwen3", 8), ("llama", 5)])
def test_prompt_logprobs_equal_transformers(tiny_model_of, arch, chunk):
    model = tiny_model_of(arch)
    llm = LLM(str(model), **CPU_OPTS, **({"max_prefill_tokens": chunk} if chunk else {}))
    other = [11, 12, 13, 14, 15, 16]
    outs = llm.generate([PROMPT, other, PROMPT[:7]], [SamplingParams(max_tokens=3, temperature=0, prompt_logprobs=3),
                                                     SamplingParams(max_tokens=3, temperature=0),
                                                     SamplingParams(max_tokens=3, temperature=0, prompt_logprobs=0)])
    llm.close()
    ref = _reference(model, PROMPT)
    _check(outs[0].prompt_logprobs, PROMPT, ref, 3)
    _check(outs[2].prompt_logprobs, PROMPT[:7], ref[:6], 0)
    assert outs[1].prompt_logprobs is None
    assert outs[0].token_ids[0] == int(ref[-1].argmax())  # generation goes on as usual


def test_a_cached_prompt_is_scored_whole(tiny_qwen3):
    llm = LLM(str(tiny_qwen3), **CPU_OPTS)
    plain = SamplingParams(max_tokens=2, temperature=0)
    llm.generate([PROMPT], plain)  # caches the prompt's pages
    scored = llm.generate([PROMPT], SamplingParams(max_tokens=2, temperature=0, prompt_logprobs=1))[0]
    again = llm.generate([PROMPT], plain)[0]
    llm.close()
    assert scored.num_cached_tokens == 0 and again.num_cached_tokens > 0
    _check(scored.prompt_logprobs, PROMPT, _reference(tiny_qwen3, PROMPT), 1)


def test_tensor_parallel_scores_as_one_device(tiny_qwen3):
    params = SamplingParams(max_tokens=2, temperature=0, prompt_logprobs=2)
    two = LLM(str(tiny_qwen3), tp_size=2, **CPU_OPTS, max_prefill_tokens=8)
    got = two.generate([PROMPT], params)[0].prompt_logprobs
    two.close()
    _check(got, PROMPT, _reference(tiny_qwen3, PROMPT), 2)


def test_bad_values_are_refused(tiny_qwen3):
    for bad in (21, -1, 1.5, True):
        with pytest.raises(RequestError, match="prompt_logprobs"):
            SamplingParams(prompt_logprobs=bad).validate(512)


def test_a_position_is_scored_once():
    """A request that runs its prompt again (retracted) scores only what it has not; its cache match stops there."""
    req = Req("r", 6, [1, 2, 3, 4, 5, 6, 7], SamplingParams(prompt_logprobs=1), 4)
    req.prompt_logprobs = [None, TokenLogprob(2, -1.0), TokenLogprob(3, -1.0)]  # tokens 1 and 2 scored
    assert match_limit(req) == 2  # positions 0 and 1 (whose logits scored tokens 1 and 2) may come from the cache
    plain = Req("p", 3, [1, 2, 3], SamplingParams(), 4)
    spans = score_spans([plain, req], [0, 0], [3, 7])
    assert [(s.req.request_id, s.flat_start, s.first, s.count) for s in spans] == [("r", 5, 2, 3)]
    assert plan_fields(spans) == ([5, 6, 7], [4, 5, 6], 1)  # positions 2..4 score tokens 3..5; 5 samples
    assert [(s.first, s.count) for s in score_spans([req], [4], [3])] == [(4, 1)]  # position 5 samples
