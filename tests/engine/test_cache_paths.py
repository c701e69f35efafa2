"""The same requests give the same greedy tokens whatever path the KV took: prefix cache, chunks, tiny pool."""
from __future__ import annotations

import pytest

from tests.conftest import CPU_OPTS
from tierlm import LLM, SamplingParams

PROMPTS = [
    "the quick brown fox jumps over the lazy dog",
    "the quick brown fox jumps over the lazy dog while a small cache keeps every page",
    "the quick brown fox jumps over the lazy dog while a small cache keeps every page of memory warm",
    "paris is the capital of france and berlin is the capital of",
    "paris is the capital of france and berlin is the capital of germany rome is in",
    "hello world this is a tiny language model",
    "hello world this is a tiny language model trained on nothing at all",
    "one two three four five six seven eight nine ten",
    "x",
]
GREEDY = SamplingParams(temperature=0, max_tokens=20, ignore_eos=True)


def run(model_dir, prompts=PROMPTS, rounds=2, **opts):
    llm = LLM(str(model_dir), **{**CPU_OPTS, **opts})
    results = [llm.generate(prompts, GREEDY) for _ in range(rounds)]  # 2nd round hits the prefix cache
    llm.engine.kv.check_no_leak(llm.engine.live_pages())
    return llm, results


@pytest.fixture(scope="module")
def reference(tiny_qwen3):
    _, results = run(tiny_qwen3, enable_prefix_cache=False, rounds=1)
    return [o.token_ids for o in results[0]]


def test_prefix_cache_on_gives_same_tokens_and_hits(tiny_qwen3, reference):
    llm, (first, second) = run(tiny_qwen3, enable_prefix_cache=True)
    assert [o.token_ids for o in first] == reference
    assert [o.token_ids for o in second] == reference
    assert all(o.num_cached_tokens > 0 for o in second if len(o.prompt_token_ids) > 4)
    assert llm.engine.stats()["tier_hits"]["L1"]["tokens"] > 0


def test_chunked_prefill_gives_same_tokens(tiny_qwen3, reference):
    llm, (first, second) = run(tiny_qwen3, max_prefill_tokens=3)
    assert [o.token_ids for o in first] == reference
    assert [o.token_ids for o in second] == reference


def test_tiny_pool_queues_and_evicts_but_finishes_all(tiny_qwen3, reference):
    # ~208 tokens of KV for 9 requests of up to ~40 tokens each: admission must queue, the cache must evict.
    llm = LLM(str(tiny_qwen3), **{**CPU_OPTS, "kv_cache_gb": 0.0002})
    engine = llm.engine
    assert engine.stats()["kv_total_tokens"] < 260
    peak_waiting = 0
    ids = [llm.tokenizer.encode(p) for p in PROMPTS]
    for rnd in range(2):
        for i, t in enumerate(ids):
            engine.add_request(f"{rnd}-{i}", t, GREEDY)
        outs: dict[str, list[int]] = {}
        while engine.has_unfinished():
            peak_waiting = max(peak_waiting, engine.stats()["num_waiting"])
            for o in engine.step():
                outs.setdefault(o.request_id, []).extend(o.new_token_ids)
                assert o.error is None
            engine.kv.check_no_leak(engine.live_pages())
        assert [outs[f"{rnd}-{i}"] for i in range(len(ids))] == reference
    assert peak_waiting > 0, "the pool was big enough that nothing queued"
    assert engine.kv.evictor.evicted_pages_total > 0, "nothing was evicted"
    assert engine.stats()["kv_used_tokens"] == 0


def test_request_larger_than_pool_is_refused_others_served(tiny_qwen3):
    llm = LLM(str(tiny_qwen3), **{**CPU_OPTS, "kv_cache_gb": 0.0002})
    outs = llm.generate(["hello world", "the quick brown fox"],
                        [SamplingParams(max_tokens=400, ignore_eos=True), SamplingParams(temperature=0, max_tokens=5)])
    assert outs[0].finish_reason == "error" and "KV pool holds" in outs[0].error
    assert outs[1].finish_reason in ("length", "stop") and outs[1].token_ids


def test_overlap_scheduling_off_gives_same_tokens(tiny_qwen3, reference):
    llm, (first, second) = run(tiny_qwen3, overlap_schedule=False)
    assert [o.token_ids for o in first] == reference
    assert [o.token_ids for o in second] == reference


def test_overlap_stops_on_eos_one_step_late_without_leaking(tiny_qwen3):
    """With overlap a finished request is still in the next launched step; its extra token is dropped."""
    outs = {}
    for overlap in (False, True):
        llm = LLM(str(tiny_qwen3), **{**CPU_OPTS, "overlap_schedule": overlap})
        full = llm.generate(PROMPTS[0], SamplingParams(temperature=0, max_tokens=12, ignore_eos=True))[0]
        stop = full.token_ids[3]
        outs[overlap] = llm.generate(PROMPTS[:3], SamplingParams(temperature=0, max_tokens=12,
                                                                  stop_token_ids=[stop]))
        llm.engine.kv.check_no_leak(llm.engine.live_pages())
        assert llm.engine.stats()["kv_used_tokens"] == 0
    assert [o.token_ids for o in outs[True]] == [o.token_ids for o in outs[False]]
    assert outs[True][0].finish_reason == "stop"


@pytest.mark.parametrize("overlap", [True, False])
def test_retraction_when_reservations_run_out_gives_same_tokens(tiny_qwen3, reference, overlap):
    """Reserve only 2 output tokens per request in a ~208-token pool: requests outgrow their reservation,
    the newest are retracted to the prefix cache and resumed; every output is still the reference's."""
    llm = LLM(str(tiny_qwen3), **{**CPU_OPTS, "kv_cache_gb": 0.0002, "reserve_new_tokens": 2,
                                  "overlap_schedule": overlap})
    engine = llm.engine
    ids = [llm.tokenizer.encode(p) for p in PROMPTS]
    for i, t in enumerate(ids):
        engine.add_request(str(i), t, GREEDY)
    outs: dict[str, list[int]] = {}
    while engine.has_unfinished():
        for o in engine.step():
            outs.setdefault(o.request_id, []).extend(o.new_token_ids)
            assert o.error is None
        engine.kv.check_no_leak(engine.live_pages())
    assert [outs[str(i)] for i in range(len(ids))] == reference
    assert engine.stats()["retracted_total"] > 0, "nothing was retracted"
    assert engine.stats()["kv_used_tokens"] == 0


def test_a_request_added_with_cache_false_leaves_nothing_in_any_tier(tiny_qwen3, tmp_path):
    """Warm-ups (`add_request(..., cache=False)`) finish without entering the prefix cache, the host tier or
    the L3 store; a normal request with the same prompt then finds nothing cached and computes the same
    tokens."""
    llm = LLM(str(tiny_qwen3), **CPU_OPTS, kv_store=f"file://{tmp_path}/l3")
    engine, kv = llm.engine, llm.engine.kv
    ids = llm.tokenizer.encode(PROMPTS[2])
    engine.add_request("warm", ids, GREEDY, cache=False)
    warm = [t for o in _drain(engine) for t in o.new_token_ids]
    kv.flush()
    stats = engine.stats()
    assert kv.radix.match_length(ids) == 0 and stats["tiers"]["backups"]["pages"] == 0
    assert stats["tiers"]["L3"]["store"]["pages_written"] == 0
    engine.add_request("real", ids, GREEDY)
    outs = _drain(engine)
    assert [t for o in outs for t in o.new_token_ids] == warm and outs[-1].num_cached_tokens == 0
    kv.check_no_leak(engine.live_pages())
    llm.close()


def _drain(engine) -> list:
    outs = []
    while engine.has_unfinished():
        outs += engine.step()
    return outs
