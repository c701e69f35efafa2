"""Both at once (`tierlm.kvcache.split_fetch`): a waiting request's L3 hit split by the cost model is served by
recomputing its head while its tail is fetched, then rejoining: the same greedy tokens as recomputing it all,
the tail counted as L3 hits and the head as recomputed, nothing leaked whichever way the tail ends."""
from __future__ import annotations

import time

import pytest

from tests.kvcache.test_prefetch_policies import (GREEDY, LONG, OTHER, filled_store, opts,  # noqa: F401 (fixture)
                                                  run_all)
from tierlm import LLM


def split_engine(tiny_qwen3, store_dir, store="file", policy="wait_complete", **kw):
    url = (f"file://{store_dir}" if store == "file" else
           f"tests.kvcache.test_prefetch_policies:SlowFileStore?dir={store_dir}&delay={store}")
    llm = LLM(str(tiny_qwen3), **opts(kv_store=url, hicache_prefetch_policy=policy, hicache_load_policy="cost",
                                      **kw))
    cost = llm.engine.kv.cost
    # a page computes and fetches in 1 ms: recompute the first half, fetch the rest beside it
    cost.fix(llm.engine.kv.page_size / 1e-3, {"L3": cost.page_bytes / 1e-3, "L2": 1e15}, overlap=True)
    return llm


def serve(engine, rid, ids):
    engine.add_request(rid, ids, GREEDY)
    out = []
    while engine.has_unfinished():
        for o in engine.step():
            out.extend(o.new_token_ids)
    return out


@pytest.mark.parametrize("overlap,chunk,policy", [(True, 8192, "wait_complete"), (False, 8192, "wait_complete"),
                                                   (True, 7, "wait_complete"), (True, 8192, "timeout")])
def test_the_head_is_recomputed_while_the_tail_comes_from_l3(tiny_qwen3, filled_store, overlap, chunk, policy):
    store_dir, ref = filled_store
    llm = split_engine(tiny_qwen3, store_dir, policy=policy, overlap_schedule=overlap, max_prefill_tokens=chunk)
    engine, ids = llm.engine, llm.tokenizer.encode(LONG)
    ps = engine.kv.page_size
    stored = (len(ids) - 1) // ps  # pages of the prompt the store holds (its last token always runs)
    head = engine.kv.cost.both_head(stored)
    assert 0 < head < stored
    assert serve(engine, "r", ids) == ref[LONG]
    stats = engine.stats()
    prefetch, hits = stats["tiers"]["prefetch"], stats["tier_hits"]
    assert prefetch["split"] == 1 and prefetch["split_rejoined"] == 1 and prefetch["split_dropped"] == 0
    assert hits["L3"]["tokens"] == (stored - head) * ps and hits["L1"]["tokens"] == 0
    assert stats["tiers"]["L3"]["recomputed_tokens"] == head * ps
    assert engine.counters["cached_tokens"] == (stored - head) * ps  # what the usage reports
    engine.kv.check_no_leak(engine.live_pages())
    llm.close()


def test_a_late_tail_is_dropped_and_the_request_computes_on(tiny_qwen3, filled_store):
    store_dir, ref = filled_store
    llm = split_engine(tiny_qwen3, store_dir, store="1.5", hicache_prefetch_timeout=0.05)  # reads take 1.5 s
    engine, ids = llm.engine, llm.tokenizer.encode(LONG)
    t0 = time.perf_counter()
    assert serve(engine, "r", ids) == ref[LONG]
    assert time.perf_counter() - t0 < 1.5  # did not wait for the tail beyond its deadline
    prefetch = engine.stats()["tiers"]["prefetch"]
    assert prefetch["split"] == 1 and prefetch["split_dropped"] == 1 and prefetch["split_rejoined"] == 0
    assert engine.stats()["tier_hits"]["L3"]["tokens"] == 0
    engine.kv.prefetcher.drain()
    engine.kv.check_no_leak(engine.live_pages())
    llm.close()


def test_aborting_a_paused_request_frees_its_tail(tiny_qwen3, filled_store):
    store_dir, _ = filled_store
    llm = split_engine(tiny_qwen3, store_dir, store="1.0")
    engine, ids = llm.engine, llm.tokenizer.encode(LONG)
    engine.add_request("r", ids, GREEDY)
    deadline = time.monotonic() + 10
    while not engine.kv.prefetcher.split.tails and time.monotonic() < deadline:
        engine.step()
    assert engine.kv.prefetcher.split.tails  # admitted with its tail in flight
    for _ in range(5):
        engine.step()
    engine.abort_request("r")
    while engine.has_unfinished():
        engine.step()
    assert not engine.kv.prefetcher.split.tails
    engine.kv.prefetcher.drain()
    engine.kv.check_no_leak(engine.live_pages())  # every host page free, in the tree or held exactly once
    assert engine.stats()["tiers"]["prefetch"]["split_dropped"] == 1
    llm.close()


def test_a_fetch_that_would_queue_behind_another_recomputes(tiny_qwen3, filled_store):
    """A page fetches as fast as it computes, so the first request splits its hit and a fetch alone would
    pay the second; but with the store busy reading the first one's tail, the second request's wait would
    outlast recomputing: it recomputes."""
    store_dir, ref = filled_store
    # reads take 1 s (a loaded machine recomputes inside that); the tail's deadline leaves them room
    llm = split_engine(tiny_qwen3, store_dir, store="1.0", hicache_prefetch_timeout=5.0)
    engine, tok = llm.engine, llm.tokenizer
    cost = engine.kv.cost
    long_ids, other_ids = tok.encode(LONG), tok.encode(OTHER)
    ps = engine.kv.page_size
    assert cost.fetch_pages((len(other_ids) - 1) // ps, 1) > 0  # alone, its fetch would pay
    t0 = time.perf_counter()
    engine.add_request("long", long_ids, GREEDY)
    pf, deadline = engine.kv.prefetcher, time.monotonic() + 10
    while not pf.split.tails and time.monotonic() < deadline:  # its fetch is under way before "other" asks
        engine.step()
    assert pf.split.tails
    engine.add_request("other", other_ids, GREEDY)
    outs, first = run_all(engine)
    assert outs == {"long": ref[LONG], "other": ref[OTHER]}
    assert time.perf_counter() - t0 >= 1.0 > first["other"]  # only the first fetch was waited for
    stats = engine.stats()
    assert stats["tier_hits"]["L3"]["hits"] == 1  # the first request's (split: its head recomputed)
    assert stats["tiers"]["L3"]["recomputed_tokens"] >= (len(other_ids) - 1) // ps * ps
    engine.kv.check_no_leak(engine.live_pages())
    llm.close()
