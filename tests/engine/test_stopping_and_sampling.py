"""Stop conditions, abort, and the sampler's parameters through the engine."""
from __future__ import annotations

import pytest
import torch

from tests.conftest import CPU_OPTS
from tierlm import LLM, SamplingParams
from tierlm.engine.sampler import Sampler, _filter_probs

PROMPT = "the quick brown fox jumps over the lazy dog"


@pytest.fixture(scope="module")
def llm(tiny_qwen3):
    return LLM(str(tiny_qwen3), **CPU_OPTS)


def greedy(llm, n=24, **kw):
    return llm.generate(PROMPT, SamplingParams(temperature=0, max_tokens=n, ignore_eos=True, **kw))[0]


def test_stop_token_ids(llm):
    full = greedy(llm)
    stop_tok = full.token_ids[5]
    out = greedy(llm, stop_token_ids=[stop_tok])
    first = full.token_ids.index(stop_tok)
    assert out.token_ids == full.token_ids[:first + 1] and out.finish_reason == "stop"
    assert out.stop_reason == stop_tok and full.stop_reason is None  # vLLM's: which id; none for a length end


def test_stop_string_truncates_text(llm):
    full = greedy(llm)
    text = full.text
    stop = text[len(text) // 2: len(text) // 2 + 2]
    out = greedy(llm, stop=[stop])
    assert out.finish_reason == "stop" and out.stop_reason == stop
    assert out.text == text[:text.find(stop)]
    assert stop not in out.text


def test_end_of_sequence_stops_without_a_stop_reason(llm):
    eos = llm.tokenizer.eos_token_id
    out = llm.generate(PROMPT, SamplingParams(temperature=0, max_tokens=8, logit_bias={eos: 50.0}))[0]
    assert out.token_ids == [eos] and out.finish_reason == "stop" and out.stop_reason is None


def test_max_tokens_length(llm):
    out = greedy(llm, n=7)
    assert len(out.token_ids) == 7 and out.finish_reason == "length"


def test_seed_reproducible_and_independent_of_batch(llm):
    p = SamplingParams(temperature=1.0, top_p=0.9, top_k=50, max_tokens=16, seed=1234, ignore_eos=True)
    alone = llm.generate(PROMPT, p)[0].token_ids
    batched = llm.generate(["hello world", PROMPT, "paris is"],
                           [SamplingParams(temperature=1.0, max_tokens=16), p,
                            SamplingParams(temperature=0.7, max_tokens=9, seed=7)])[1].token_ids
    assert alone == batched
    other = llm.generate(PROMPT, SamplingParams(temperature=1.0, top_p=0.9, top_k=50, max_tokens=16, seed=99,
                                                ignore_eos=True))[0].token_ids
    assert other != alone


def test_top_k_0_is_off_like_minus_1(llm):
    """0 (vLLM's and transformers' spelling of off) samples exactly as -1 does."""
    draws = [llm.generate(PROMPT, SamplingParams(temperature=1.0, top_k=k, max_tokens=12, seed=5,
                                                 ignore_eos=True))[0].token_ids for k in (0, -1, 2)]
    assert draws[0] == draws[1] != draws[2]


def test_top_k_1_is_greedy(llm):
    sampled = llm.generate(PROMPT, SamplingParams(temperature=1.3, top_k=1, max_tokens=12, ignore_eos=True))[0]
    assert sampled.token_ids == greedy(llm, n=12).token_ids


def test_logprobs_of_chosen_tokens(llm):
    out = greedy(llm, n=6, logprobs=3)
    assert len(out.logprobs) == 6
    for tok, lp in zip(out.token_ids, out.logprobs):
        assert lp.token_id == tok and lp.logprob <= 0
        assert len(lp.top) == 3 and lp.top[0][0] == tok  # greedy picks the most likely token
        assert lp.top[0][1] == pytest.approx(lp.logprob)


def test_abort_frees_kv_at_once(llm):
    engine = llm.engine
    engine.add_request("a", llm.tokenizer.encode(PROMPT), SamplingParams(max_tokens=50, ignore_eos=True))
    engine.step()
    assert engine.stats()["kv_used_tokens"] > 0
    engine.abort_request("a")
    assert engine.stats()["kv_used_tokens"] == 0 and engine.stats()["num_running"] == 0
    outs = engine.step()
    assert [(o.request_id, o.finished, o.finish_reason) for o in outs] == [("a", True, "abort")]
    assert not engine.has_unfinished()
    engine.kv.check_no_leak(engine.live_pages())


def test_filter_probs_top_p_min_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    p = _filter_probs(logits, [SamplingParams(top_p=0.7)])
    assert torch.allclose(p, torch.tensor([[0.625, 0.375, 0.0, 0.0]]))
    p = _filter_probs(logits, [SamplingParams(min_p=0.5)])
    assert torch.allclose(p, torch.tensor([[0.625, 0.375, 0.0, 0.0]]))
    p = _filter_probs(logits, [SamplingParams(top_k=3)])
    assert p[0, 3] == 0 and torch.allclose(p.sum(), torch.tensor(1.0))


def test_sampler_distribution_follows_probs():
    sampler = Sampler(torch.device("cpu"), seed=0)
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1]])).repeat(4000, 1)
    toks = sampler.sample(logits, [SamplingParams(temperature=1.0)] * 4000, [None] * 4000)
    freq = torch.bincount(toks, minlength=3).float() / 4000
    assert torch.allclose(freq, torch.tensor([0.7, 0.2, 0.1]), atol=0.03)


@pytest.mark.parametrize("params", [
    [SamplingParams(temperature=0)] * 3,
    [SamplingParams(temperature=0.8, seed=5), SamplingParams(temperature=0), SamplingParams(temperature=1.2, seed=9)],
    [SamplingParams(temperature=0.7, top_k=20, top_p=0.9, seed=3)] * 2 + [SamplingParams(temperature=0)],
], ids=["greedy", "mixed", "filtered"])
def test_low_precision_logits_sample_as_their_float32_widening(params):
    """The model hands the sampler logits in its own dtype; every path must pick what it picks from the
    exactly widened float32 logits (with ties: bf16 rounding makes equal maxima common)."""
    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(len(params), 500, generator=gen) * 4).to(torch.bfloat16)
    logits[0, 17] = logits[0, 301] = logits[0].max() + 1  # a tie: the first index wins in both dtypes

    def draw(x):
        gens = [torch.Generator().manual_seed(p.seed) if p.seed is not None else None for p in params]
        return Sampler(torch.device("cpu"), seed=1).sample(x, params, gens)

    assert torch.equal(draw(logits), draw(logits.float()))
    if params[0].greedy:
        assert draw(logits)[0].item() == 17


def test_a_mixed_batch_samples_each_row_by_its_own_parameters():
    """Greedy rows, temperature rows, seeded rows and a filtered row in one batch: greedy rows take the
    argmax, a seeded row draws what it draws alone, top_k=1 is the argmax."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 300, generator=gen) * 3
    params = [SamplingParams(temperature=0), SamplingParams(temperature=0.9), SamplingParams(temperature=0.7, seed=4),
              SamplingParams(temperature=0), SamplingParams(temperature=1.1, top_k=1), SamplingParams(temperature=0.5)]

    def gens(ps):
        return [torch.Generator().manual_seed(p.seed) if p.seed is not None else None for p in ps]

    toks = Sampler(torch.device("cpu"), seed=2).sample(logits, params, gens(params))
    argmax = logits.argmax(dim=-1)
    assert toks[0] == argmax[0] and toks[3] == argmax[3] and toks[4] == argmax[4]
    alone = Sampler(torch.device("cpu"), seed=7).sample(logits[2:3], params[2:3], gens(params[2:3]))
    assert toks[2] == alone[0]


def test_a_batch_at_one_temperature_reads_a_kept_vector():
    """Uniform batches reuse one device vector per temperature (no upload per step); mixed ones upload theirs;
    only a few temperatures are kept."""
    sampler = Sampler(torch.device("cpu"), seed=0)
    a = sampler._temperatures([0.6] * 5, torch.device("cpu"))
    b = sampler._temperatures([0.6] * 300, torch.device("cpu"))
    c = sampler._temperatures([0.6] * 7, torch.device("cpu"))
    assert a.tolist() == pytest.approx([0.6] * 5) and b.numel() == 300 and c.numel() == 7
    assert c.data_ptr() == b.data_ptr()  # the vector grown for 300 serves the smaller batches after it
    mixed = sampler._temperatures([0.6, 1.2, 0.6], torch.device("cpu"))
    assert mixed.tolist() == pytest.approx([0.6, 1.2, 0.6])
    for t in range(20):
        sampler._temperatures([0.1 + t / 10] * 3, torch.device("cpu"))
    assert len(sampler._uniform) <= 8


def test_warm_up_runs_every_torch_path_and_leaves_the_draws_as_they_were(monkeypatch):
    """The start-up warm-up takes each torch path a request can ask for once (so its first request does not load
    their kernels), and a warmed sampler draws what a fresh one draws."""
    from tierlm.engine import logit_bias, penalties, sampler as sampler_mod

    seen = set()

    def spy(name, fn):
        return lambda *a, **kw: seen.add(name) or fn(*a, **kw)
    monkeypatch.setattr(sampler_mod, "with_logit_bias", spy("bias", logit_bias.with_logit_bias))
    monkeypatch.setattr(sampler_mod, "_filter_probs", spy("filters", _filter_probs))
    monkeypatch.setattr(penalties.PenaltyBatch, "adjust", spy("adjust", penalties.PenaltyBatch.adjust))
    monkeypatch.setattr(penalties.PenaltyBatch, "record", spy("record", penalties.PenaltyBatch.record))
    monkeypatch.setattr(Sampler, "logprobs", staticmethod(spy("logprobs", Sampler.logprobs)))
    monkeypatch.setattr(Sampler, "_merge", staticmethod(spy("merge", Sampler._merge)))
    warmed, fresh = Sampler(torch.device("cpu"), 7), Sampler(torch.device("cpu"), 7)
    warmed.warm_up(512, torch.float32)
    assert seen == {"bias", "filters", "adjust", "record", "logprobs", "merge"}
    logits = torch.randn(6, 512)
    params = [SamplingParams(temperature=1.0)] * 3 + [SamplingParams(temperature=0.8, top_p=0.9)] * 3
    assert torch.equal(warmed.sample(logits, params, [None] * 6), fresh.sample(logits, params, [None] * 6))
