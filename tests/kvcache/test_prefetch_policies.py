"""L3 prefetch at admission: a slow store never holds up other requests; every policy gives the same
tokens (timeout/best_effort fall back to recompute); host RAM that cannot hold the pool is refused."""
from __future__ import annotations

import time

import pytest

from tests.conftest import CPU_OPTS
from tierlm import LLM, SamplingParams
from tierlm.kvcache.stores.file import FileKVStore

LONG = "the quick brown fox jumps over the lazy dog while a small cache keeps every page of memory warm"
OTHER = "one two three four five six seven eight nine ten"
GREEDY = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)


class SlowFileStore(FileKVStore):
    """A file store whose reads take `delay` seconds and lookups `lookup` seconds (loaded through --kv-store
    module:Class?dir=..)."""

    def __init__(self, dir: str, delay: str = "0.5", lookup: str = "0") -> None:
        super().__init__(dir, 10**9)
        self.delay, self.lookup = float(delay), float(lookup)

    def batch_exists(self, keys):
        time.sleep(self.lookup)
        return super().batch_exists(keys)

    def batch_get(self, keys, host_pages):
        time.sleep(self.delay)
        return super().batch_get(keys, host_pages)


def opts(**kw):
    return {**CPU_OPTS, "enable_hicache": True, "hicache_prefetch_threshold": 4, **kw}


@pytest.fixture
def filled_store(tiny_qwen3, tmp_path):
    llm = LLM(str(tiny_qwen3), **opts(kv_store=f"file://{tmp_path}"))
    ref = {p: o.token_ids for p, o in zip((LONG, OTHER), llm.generate([LONG, OTHER], GREEDY))}
    llm.close()
    return tmp_path, ref


def run_all(engine) -> tuple[dict[str, list[int]], dict[str, float]]:
    """Step `engine` until its requests finish: their tokens and seconds to first token, by request id."""
    outs: dict[str, list[int]] = {}
    first: dict[str, float] = {}
    t0 = time.perf_counter()
    while engine.has_unfinished():
        for o in engine.step():
            if o.new_token_ids:
                first.setdefault(o.request_id, time.perf_counter() - t0)
            outs.setdefault(o.request_id, []).extend(o.new_token_ids)
    return outs, first


def run_pair(tiny_qwen3, store_dir, delay, **kw):
    llm = LLM(str(tiny_qwen3), **opts(kv_store=f"tests.kvcache.test_prefetch_policies:SlowFileStore?dir={store_dir}"
                                               f"&delay={delay}", **kw))
    engine, tok = llm.engine, llm.tokenizer
    engine.add_request("long", tok.encode(LONG), GREEDY)
    engine.add_request("other", tok.encode("hello world this is a tiny language model"), GREEDY)  # not stored
    outs, first_token = run_all(engine)
    engine.kv.check_no_leak(engine.live_pages())
    stats = engine.stats()
    llm.close()
    return outs["long"], first_token, stats


def test_wait_complete_does_not_block_others(tiny_qwen3, filled_store):
    store_dir, ref = filled_store
    long_out, first, stats = run_pair(tiny_qwen3, store_dir, 0.6, hicache_prefetch_policy="wait_complete")
    assert long_out == ref[LONG]
    assert first["other"] < first["long"] and first["long"] >= 0.5  # the slow prefetch held only its request
    assert stats["tier_hits"]["L3"]["tokens"] > 0


@pytest.mark.parametrize("policy", ["timeout", "best_effort"])
def test_late_prefetch_falls_back_to_recompute(tiny_qwen3, filled_store, policy):
    store_dir, ref = filled_store
    # the store takes 1.5 s a read; unloaded, the first token comes about 0.05 s in (the policy's timeout),
    # so the bound leaves room for a busy machine without letting a wait for the store pass
    long_out, first, stats = run_pair(tiny_qwen3, store_dir, 1.5, hicache_prefetch_policy=policy,
                                      hicache_prefetch_timeout=0.05)
    assert long_out == ref[LONG]
    assert first["long"] < 1.0  # did not wait for the store
    assert stats["tier_hits"]["L3"]["tokens"] == 0


def test_a_fetch_far_slower_than_predicted_is_given_up_long_before_the_timeout(tiny_qwen3, filled_store):
    """The cost model believes the store fast (a page in 1 ms, recomputing one 100 ms), so the whole hit is
    fetched; the store takes 1.5 s. Under `timeout` the request waits about twice the predicted fetch, not
    the policy's 10 s, and recomputes what did not arrive."""
    store_dir, ref = filled_store
    llm = LLM(str(tiny_qwen3), **opts(kv_store=f"tests.kvcache.test_prefetch_policies:SlowFileStore?dir={store_dir}"
                                               "&delay=1.5", hicache_prefetch_policy="timeout",
                                      hicache_prefetch_timeout=10.0, hicache_load_policy="cost"))
    engine, cost = llm.engine, llm.engine.kv.cost
    cost.fix(engine.kv.page_size / 0.1, {"L3": cost.page_bytes / 1e-3, "L2": 1e15})
    assert cost.fetch_seconds(10) == pytest.approx(0.01)
    engine.add_request("long", llm.tokenizer.encode(LONG), GREEDY)
    outs, first = run_all(engine)
    assert outs["long"] == ref[LONG] and first["long"] < 1.0
    stats = engine.stats()
    assert stats["tiers"]["prefetch"]["partial"] == 1 and stats["tier_hits"]["L3"]["tokens"] == 0
    engine.kv.prefetcher.drain()
    engine.kv.check_no_leak(engine.live_pages())
    llm.close()


def test_host_pool_larger_than_ram_is_refused_at_start(tiny_qwen3):
    with pytest.raises(ValueError, match="--hicache-size: the host KV pool needs"):
        LLM(str(tiny_qwen3), **opts(hicache_size=1e7))


def test_cost_policy_stops_waiting_for_a_store_slower_than_recomputing(tiny_qwen3, filled_store):
    store_dir, ref = filled_store
    llm = LLM(str(tiny_qwen3), **opts(kv_store=f"tests.kvcache.test_prefetch_policies:SlowFileStore?dir={store_dir}"
                                               "&delay=1.0&lookup=1.0", hicache_prefetch_policy="wait_complete",
                                      hicache_load_policy="cost"))
    engine, ids = llm.engine, llm.tokenizer.encode(LONG)

    def serve(rid):
        engine.add_request(rid, ids, GREEDY)
        out, t0, first = [], time.perf_counter(), None
        while engine.has_unfinished():
            for o in engine.step():
                if o.new_token_ids and first is None:
                    first = time.perf_counter() - t0
                out.extend(o.new_token_ids)
        return out, first

    out, first = serve("unmeasured")  # nothing measured yet: recomputed, the store probed in the background
    # a store a second away (lookup and read): a first token before it says nothing waited for the store, with room
    # for a loaded machine's recompute
    assert out == ref[LONG] and first < 1.0 and engine.stats()["tier_hits"]["L3"]["tokens"] == 0
    deadline = time.monotonic() + 10
    while engine.kv.prefetcher.probe is not None and time.monotonic() < deadline:  # the probe times the store
        engine.kv.idle_wait(0.05)
        engine.kv.poll()
    assert engine.stats()["tiers"]["cost"]["L3_samples"] == 1
    engine.kv.drop_device_cache()
    engine.kv.drop_host_cache()  # the prompt is in the store only
    out, first = serve("measured")
    engine.kv.flush()
    assert out == ref[LONG] and first < 1.0  # recomputed without waiting for the store, not even its lookup
    tiers = engine.stats()["tiers"]
    assert tiers["L3"]["recomputed_tokens"] > 0 and tiers["cost"]["L3_samples"] == 1
    engine.kv.check_no_leak(engine.live_pages())
    llm.close()
