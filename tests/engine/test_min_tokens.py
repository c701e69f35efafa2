"""vLLM's `min_tokens` and `include_stop_str_in_output` through the engine: stop ids masked until the count (against
transformers' `min_new_tokens`), stop strings not matched in the first tokens' text, the stop string or stop
token kept at the end of the text; plus `MinTokens`' bookkeeping."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForCausalLM

from tests.conftest import CPU_OPTS
from tierlm import LLM, SamplingParams
from tierlm.engine.logit_bias import with_logit_bias
from tierlm.engine.min_tokens import MinTokens
from tierlm.errors import RequestError

PROMPTS = ["the quick brown fox jumps over the lazy dog", "hello"]


@pytest.fixture(scope="module")
def llm(tiny_qwen3):
    engine = LLM(str(tiny_qwen3), **CPU_OPTS)
    yield engine
    engine.close()


def _req(rid, prompt_len, outputs, pending, **params):
    return SimpleNamespace(request_id=rid, prompt_len=prompt_len, token_ids=[0] * (prompt_len + outputs),
                           num_pending=pending, params=SamplingParams(**params))


def test_bans_count_tokens_in_flight_and_stop_once_every_request_is_past_its_count():
    watch = MinTokens({2, 7})
    a = _req("a", 3, 1, 1, min_tokens=3, stop_token_ids=[9])  # 2 generated (one still in flight): banned
    b = _req("b", 3, 1, 2, min_tokens=3)  # 3 generated: free
    c = _req("c", 3, 0, 0, min_tokens=1, ignore_eos=True, stop_token_ids=[4])  # eos is not a stop for it
    d = _req("d", 3, 0, 0)
    assert watch.bans([a, b, c, d]) is None, "nothing noted: no pass looks"
    for r in (a, b, c, d):
        watch.expect(r)
    assert watch.bans([a, b, c, d]) == [[2, 7, 9], None, [4], None]
    assert watch.bans([b, d]) is None
    c.token_ids.append(4)  # c's first output (a stop id it could not have drawn)
    assert watch.early(c) and watch.bans([c]) is None
    c.token_ids.append(5)
    assert not watch.early(c)  # the second may stop it: c is done
    watch.done(a), watch.done(b)
    assert watch.bans([a, b, c, d]) is None and not watch._open


def test_a_banned_token_is_minus_inf_whatever_its_bias():
    logits = torch.zeros(2, 8)
    params = [SamplingParams(logit_bias={3: 100.0}), SamplingParams(logit_bias={1: 2.0})]
    out = with_logit_bias(logits, params, [[3, 5], None])
    assert out[0, 3] == -math.inf and out[0, 5] == -math.inf and out[1, 1] == 2.0
    assert torch.isfinite(out[0, [0, 1, 2, 4, 6, 7]]).all() and torch.isfinite(out[1]).all()


def test_greedy_outputs_match_transformers_min_new_tokens(tiny_qwen3, llm):
    """End-of-sequence pushed up so that it wins at once: transformers' `min_new_tokens` masks it for that many
    tokens, then stops on it; so must the engine, in one batch with a request that stops at once."""
    hf = AutoModelForCausalLM.from_pretrained(tiny_qwen3, dtype=torch.float32).eval()
    eos = llm.tokenizer.eos_token_id
    ids = [llm.tokenizer.encode(p) for p in PROMPTS]
    want = []
    for prompt, k in zip(ids, (5, 9)):
        with torch.no_grad():
            gen = hf.generate(torch.tensor([prompt]), max_new_tokens=20, min_new_tokens=k, do_sample=False,
                              eos_token_id=eos, pad_token_id=0, sequence_bias={(eos,): 30.0})
        want.append(gen[0, len(prompt):].tolist())
    settings = [SamplingParams(temperature=0, max_tokens=20, min_tokens=k, logit_bias={eos: 30.0}) for k in (5, 9)]
    ours = llm.generate(ids + ids[:1], settings + [SamplingParams(temperature=0, max_tokens=20,
                                                                  logit_bias={eos: 30.0})])
    for got, expected, k in zip(ours, want, (5, 9)):
        assert got.token_ids == expected and len(got.token_ids) == k + 1 and got.token_ids[-1] == eos
        assert got.finish_reason == "stop" and eos not in got.token_ids[:-1]
    assert ours[2].token_ids == [eos], "a request without min_tokens stops at once beside them"


def test_stop_token_ids_and_sampled_requests_wait_for_the_count(llm):
    tok = llm.tokenizer.encode(" fox")[0]
    bias = {tok: 40.0}
    for temperature in (0.0, 1.0):
        out = llm.generate(PROMPTS[0], SamplingParams(temperature=temperature, max_tokens=12, min_tokens=4,
                                                      ignore_eos=True, stop_token_ids=[tok], logit_bias=bias,
                                                      seed=1))[0]
        assert out.finish_reason == "stop" and len(out.token_ids) == 5 and out.token_ids[-1] == tok
        assert tok not in out.token_ids[:-1]


def test_stop_strings_wait_for_the_count_and_include_keeps_them(llm):
    """A token forced every step: its text is the stop string. Within the first `min_tokens` it does not stop the
    request; the next does, and its text is kept with `include_stop_str_in_output`."""
    tok = llm.tokenizer.encode(" fox")[0]
    piece = llm.tokenizer.decode([tok])
    common = dict(temperature=0, max_tokens=12, ignore_eos=True, logit_bias={tok: 40.0}, stop=[piece.strip()])
    out = llm.generate(PROMPTS[1], SamplingParams(min_tokens=3, **common))[0]
    assert out.finish_reason == "stop" and len(out.token_ids) == 4 and out.text == piece * 3 + piece[:1]
    out = llm.generate(PROMPTS[1], SamplingParams(min_tokens=3, include_stop_str_in_output=True, **common))[0]
    assert out.finish_reason == "stop" and out.text == piece * 4
    out = llm.generate(PROMPTS[1], SamplingParams(include_stop_str_in_output=True, **common))[0]
    assert len(out.token_ids) == 1 and out.text == piece


def test_include_keeps_the_stop_tokens_text(llm):
    tok = llm.tokenizer.encode(" fox")[0]
    common = dict(temperature=0, max_tokens=12, ignore_eos=True, logit_bias={tok: 40.0}, stop_token_ids=[tok])
    assert llm.generate(PROMPTS[1], SamplingParams(**common))[0].text == ""
    out = llm.generate(PROMPTS[1], SamplingParams(include_stop_str_in_output=True, **common))[0]
    assert out.token_ids == [tok] and out.text == llm.tokenizer.decode([tok])


@pytest.mark.parametrize("fields, match", [({"min_tokens": -1}, "min_tokens must be an integer >= 0"),
                                           ({"min_tokens": 5, "max_tokens": 4}, r"min_tokens must be <= max_tokens"),
                                           ({"min_tokens": True}, "min_tokens must be an integer")])
def test_bad_min_tokens_are_refused(llm, fields, match):
    with pytest.raises(RequestError, match=match):
        llm.engine.add_request("bad", [1, 2], SamplingParams(**fields))
