"""Latent-attention KV (one latent per token and layer, DeepSeek-V2) takes every cache path unchanged:
identical greedy outputs with no cache, from L1, from L2 after forced device eviction, from a file L3 after a
restart (tier hit counters prove the path), with chunked prefill and when a tiny pool forces retraction."""
from __future__ import annotations

import pytest

from tests.conftest import CPU_OPTS
from tests.engine.test_cache_paths import PROMPTS as CACHE_PROMPTS
from tests.kvcache.test_tier_paths import GREEDY, PROMPTS, TIER_OPTS, hits
from tierlm import LLM, SamplingParams

CACHE_GREEDY = SamplingParams(temperature=0, max_tokens=20, ignore_eos=True)
TINY_POOL_GB = 0.0001  # ~220 tokens of 480-byte latents (3 layers x (32 + 8) float32)


def make(model_dir, **opts) -> LLM:
    return LLM(str(model_dir), **{**CPU_OPTS, **opts})


def serve(llm: LLM, prompts=PROMPTS, params=GREEDY) -> list[list[int]]:
    outs = [o.token_ids for o in llm.generate(prompts, params)]
    llm.engine.kv.check_no_leak(llm.engine.live_pages())
    return outs


@pytest.fixture(scope="module")
def model(tiny_models):
    return tiny_models["deepseek_v2"]


@pytest.fixture(scope="module")
def reference(model):
    llm = make(model, enable_prefix_cache=False)  # (a) no cache
    assert llm.engine.worker.pool.layout.describe()[0] == [["latent", [40], "float32"]]
    return serve(llm)


@pytest.fixture(scope="module")
def cache_reference(model):
    return serve(make(model, enable_prefix_cache=False), CACHE_PROMPTS, CACHE_GREEDY)


def test_l1_hits(model, reference):
    llm = make(model, **TIER_OPTS)
    assert serve(llm) == reference
    before = hits(llm)
    assert serve(llm) == reference
    after = hits(llm)
    assert after["L1"] > before["L1"] and after["L2"] == 0 and after["L3"] == 0


def test_l2_after_forced_device_eviction(model, reference):
    llm = make(model, **TIER_OPTS, hicache_write_policy="write_through", hicache_write_threshold=1)
    assert serve(llm) == reference
    kv = llm.engine.kv
    assert kv.drop_device_cache() > 0
    assert kv.radix.evictable_pages == 0 and kv.radix.cached_pages == 0
    before = hits(llm)
    assert serve(llm) == reference
    after = hits(llm)
    assert after["L2"] - before["L2"] > after["L1"] - before["L1"] and after["L3"] == 0
    assert llm.engine.stats()["tiers"]["L2"]["bytes"] > 0
    llm.close()


def test_l3_file_after_restart(model, reference, tmp_path):
    store = f"file://{tmp_path / 'kv'}"
    first = make(model, **TIER_OPTS, kv_store=store)
    assert serve(first) == reference
    first.close()  # drains the L3 writes
    second = make(model, **TIER_OPTS, kv_store=store)
    assert serve(second) == reference
    h = hits(second)
    assert h["L3"] > 0 and h["L2"] == 0 and h["L3"] > h["L1"]
    st = second.engine.stats()["tiers"]["L3"]["store"]
    assert st["hits"] > 0 and st["corrupt"] == 0 and st["errors"] == 0
    second.close()


def test_chunked_prefill(model, cache_reference):
    llm = make(model, max_prefill_tokens=3)
    assert serve(llm, CACHE_PROMPTS, CACHE_GREEDY) == cache_reference
    assert serve(llm, CACHE_PROMPTS, CACHE_GREEDY) == cache_reference  # chunks that start in a cached prefix
    assert llm.engine.stats()["tier_hits"]["L1"]["tokens"] > 0


@pytest.mark.parametrize("overlap", [True, False])
def test_retraction_in_a_tiny_pool(model, cache_reference, overlap):
    llm = make(model, kv_cache_gb=TINY_POOL_GB, reserve_new_tokens=2, overlap_schedule=overlap)
    engine = llm.engine
    assert engine.stats()["kv_total_tokens"] < 260
    ids = [llm.tokenizer.encode(p) for p in CACHE_PROMPTS]
    for i, t in enumerate(ids):
        engine.add_request(str(i), t, CACHE_GREEDY)
    outs: dict[str, list[int]] = {}
    while engine.has_unfinished():
        for o in engine.step():
            outs.setdefault(o.request_id, []).extend(o.new_token_ids)
            assert o.error is None
        engine.kv.check_no_leak(engine.live_pages())
    assert [outs[str(i)] for i in range(len(ids))] == cache_reference
    assert engine.stats()["retracted_total"] > 0, "nothing was retracted"
    assert engine.stats()["kv_used_tokens"] == 0
