"""Identical greedy outputs whichever tier served the KV, with tier hit counters proving the path:
(a) no cache, (b) L1, (c) L2 after forced device eviction, (d) L3 file after a restart, (e) L3 redis,
(f) one stored page corrupted on disk, (g) redis-server killed mid-run; and with the cost model deciding, (h)
L2 hits loaded, recomputed or split between both, (i) L3 hits recomputed when the store is slow."""
from __future__ import annotations

import pytest

from tests.conftest import CPU_OPTS
from tierlm import LLM, SamplingParams

PROMPTS = [
    "the quick brown fox jumps over the lazy dog while a small cache keeps every page",
    "the quick brown fox jumps over the lazy dog while a small cache keeps every page of memory warm",
    "paris is the capital of france and berlin is the capital of germany rome is in",
    "hello world this is a tiny language model trained on nothing at all",
]
GREEDY = SamplingParams(temperature=0, max_tokens=10, ignore_eos=True)
TIER_OPTS = dict(enable_hicache=True, hicache_prefetch_policy="wait_complete", hicache_prefetch_threshold=4)


def make(model_dir, **opts) -> LLM:
    return LLM(str(model_dir), **{**CPU_OPTS, **opts})


def serve(llm: LLM) -> list[list[int]]:
    outs = [o.token_ids for o in llm.generate(PROMPTS, GREEDY)]
    llm.engine.kv.check_no_leak(llm.engine.live_pages())
    return outs


def hits(llm: LLM) -> dict:
    return {tier: v["tokens"] for tier, v in llm.engine.stats()["tier_hits"].items()}


@pytest.fixture(scope="module")
def reference(tiny_qwen3):
    return serve(make(tiny_qwen3, enable_prefix_cache=False))  # (a)


def test_l1_hits(tiny_qwen3, reference):  # (b)
    llm = make(tiny_qwen3, **TIER_OPTS)
    assert serve(llm) == reference
    assert hits(llm)["L2"] == 0
    before = hits(llm)
    assert serve(llm) == reference
    after = hits(llm)
    assert after["L1"] > before["L1"] and after["L2"] == 0 and after["L3"] == 0


@pytest.mark.parametrize("policy", ["write_through", "write_through_selective", "write_back"])
def test_l2_after_forced_device_eviction(tiny_qwen3, reference, policy):  # (c)
    llm = make(tiny_qwen3, **TIER_OPTS, hicache_write_policy=policy, hicache_write_threshold=1)
    assert serve(llm) == reference
    if policy == "write_through_selective":
        assert serve(llm) == reference  # the hits of this round trigger the backups
    kv = llm.engine.kv
    assert kv.drop_device_cache() > 0
    assert kv.radix.evictable_pages == 0 and kv.radix.cached_pages == 0  # nothing left on the device
    before = hits(llm)
    assert serve(llm) == reference
    after = hits(llm)
    # prompts 0 and 1 share a prefix: whichever is admitted second may find it loaded already (an L1 hit)
    assert after["L2"] - before["L2"] > after["L1"] - before["L1"] and after["L3"] == 0
    assert llm.engine.stats()["tiers"]["L2"]["bytes"] > 0
    llm.close()


@pytest.mark.parametrize("storage", ["write_through", "write_back", "auto"])
def test_l3_file_after_restart(tiny_qwen3, reference, tmp_path, storage):  # (d)
    """write_back: the first engine writes its host copies at shutdown, and the second is served from them."""
    store = f"file://{tmp_path / 'kv'}"
    first = make(tiny_qwen3, **TIER_OPTS, kv_store=store, hicache_storage_write_policy=storage)
    assert serve(first) == reference
    first.close()  # drains the L3 writes
    second = make(tiny_qwen3, **TIER_OPTS, kv_store=store, hicache_storage_write_policy=storage)
    assert serve(second) == reference
    h = hits(second)
    assert h["L3"] > 0 and h["L2"] == 0 and h["L3"] > h["L1"]
    st = second.engine.stats()["tiers"]["L3"]["store"]
    assert st["hits"] > 0 and st["corrupt"] == 0 and st["errors"] == 0
    second.close()


def test_l3_write_back_on_host_eviction(tiny_qwen3, reference, tmp_path):
    """Storage write_back in one engine: nothing reaches the store until the host tier evicts, the eviction
    writes first, and the prefixes are then served from L3 alone with the same tokens."""
    llm = make(tiny_qwen3, **TIER_OPTS, kv_store=f"file://{tmp_path / 'kv'}", hicache_storage_write_policy="write_back")
    assert serve(llm) == reference
    kv = llm.engine.kv
    kv.flush()
    assert kv.store.stats()["pages"] == 0
    assert kv.drop_device_cache() > 0 and kv.drop_host_cache() > 0
    assert kv.tier_stats()["backups"]["l3_on_eviction_pages"] == kv.store.stats()["pages"] > 0
    assert serve(llm) == reference
    assert hits(llm)["L3"] > 0
    kv.check_no_leak(llm.engine.live_pages())
    llm.close()


def test_l3_redis(tiny_qwen3, reference, redis_server):  # (e)
    first = make(tiny_qwen3, **TIER_OPTS, kv_store=redis_server.url)
    assert serve(first) == reference
    first.close()
    assert first.engine.kv.store.stats()["pages_written"] > 0
    second = make(tiny_qwen3, **TIER_OPTS, kv_store=redis_server.url)
    assert serve(second) == reference
    assert hits(second)["L3"] > hits(second)["L1"]
    second.close()


def test_corrupt_page_on_disk_is_a_miss(tiny_qwen3, reference, tmp_path):  # (f)
    store = f"file://{tmp_path / 'kv'}"
    first = make(tiny_qwen3, **TIER_OPTS, kv_store=store)
    assert serve(first) == reference
    first.close()
    kv = first.engine.kv
    key = kv.hasher.chain(first.tokenizer.encode(PROMPTS[2]))[1]  # second page of a prompt nobody shares
    path, offset, length = kv.store.locate(key)
    blob = bytearray(path.read_bytes())
    blob[offset + length - 7] ^= 0xFF  # flip bits inside the payload
    path.write_bytes(bytes(blob))
    second = make(tiny_qwen3, **TIER_OPTS, kv_store=store)
    assert serve(second) == reference
    st = second.engine.stats()["tiers"]["L3"]["store"]
    assert st["corrupt"] == 1 and hits(second)["L3"] > 0
    second.close()


def test_redis_killed_mid_run(tiny_qwen3, reference, redis_server):  # (g)
    llm = make(tiny_qwen3, **TIER_OPTS, kv_store=redis_server.url, kv_store_timeout=0.5)
    engine = llm.engine
    ids = [llm.tokenizer.encode(p) for p in PROMPTS]
    outs: dict[str, list[int]] = {}
    for i, t in enumerate(ids):
        engine.add_request(str(i), t, GREEDY)
    steps = 0
    while engine.has_unfinished():
        for o in engine.step():
            outs.setdefault(o.request_id, []).extend(o.new_token_ids)
        steps += 1
        if steps == 3:
            redis_server.kill()  # while requests run and backups stream to L3
    assert [outs[str(i)] for i in range(len(ids))] == reference
    engine.kv.drop_device_cache()
    engine.kv.drop_host_cache()
    assert serve(llm) == reference  # L1/L2 empty, L3 down: everything is recomputed
    st = engine.stats()["tiers"]["L3"]["store"]
    assert st["errors"] > 0 and hits(llm)["L3"] == 0
    engine.kv.check_no_leak(engine.live_pages())
    llm.close()


def split_counts(llm: LLM, tier: str) -> tuple[int, int]:
    t = llm.engine.stats()["tiers"][tier]
    return t["loaded_tokens"], t["recomputed_tokens"]


# (tokens/s of prefill, host-to-device bytes/s as a multiple of prefill's bytes/s): loading a page takes far
# longer than computing it, as long, or no time
FORCED = {"recompute": 1e-6, "split": 1.0, "load": 1e6}


@pytest.mark.parametrize("forced", FORCED)
def test_l2_hit_loaded_or_recomputed_by_cost_gives_same_tokens(tiny_qwen3, reference, forced):  # (h)
    llm = make(tiny_qwen3, **TIER_OPTS, hicache_load_policy="cost")
    assert serve(llm) == reference
    kv = llm.engine.kv
    assert kv.drop_device_cache() > 0
    rate = 1e3  # tokens/s; a page of ps tokens computes in ps / rate seconds
    kv.cost.fix(rate, {"L2": FORCED[forced] * kv.cost.page_bytes * rate / kv.page_size}, overlap=True)
    assert serve(llm) == reference
    loaded, recomputed = split_counts(llm, "L2")
    assert {"recompute": loaded == 0 < recomputed, "split": 0 < loaded and 0 < recomputed,
            "load": recomputed == 0 < loaded}[forced], (loaded, recomputed)
    llm.close()


def test_l3_hit_recomputed_when_the_store_is_slow(tiny_qwen3, reference, tmp_path):  # (i)
    store = f"file://{tmp_path / 'kv'}"
    first = make(tiny_qwen3, **TIER_OPTS, kv_store=store)
    assert serve(first) == reference
    first.close()
    second = make(tiny_qwen3, **TIER_OPTS, kv_store=store, hicache_load_policy="cost")
    second.engine.kv.cost.fix(1e3, {"L3": 1.0})  # a byte a second
    assert serve(second) == reference
    second.engine.kv.flush()  # the store lookups that only count its hits have finished
    assert split_counts(second, "L3")[0] == 0 < split_counts(second, "L3")[1]
    assert hits(second)["L3"] == 0 and second.engine.stats()["tiers"]["prefetch"]["pages_requested"] == 0
    second.close()
