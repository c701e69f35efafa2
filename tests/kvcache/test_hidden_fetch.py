"""A request queued behind other requests' prefill fetches its L3 hit while it waits (`CostModel.hidden_pages`),
even from a store slower than recomputing: the same greedy tokens, the fetched pages counted as L3 hits, and
the request never waits for the store beyond its turn."""
from __future__ import annotations

import time

from tests.kvcache.test_prefetch_policies import (GREEDY, LONG, OTHER, filled_store, opts,  # noqa: F401 (fixture)
                                                  run_all)
from tierlm import LLM

FIRST = " ".join(f"word{i}" for i in range(60))  # prefill work the second request queues behind (not stored)
# A store read this slow outlasts these runs many times over, even on a loaded two-core machine (one took 1.48 s
# under a parallel test run): a run that ends, or a first token that comes, before `UNWAITED` never waited for a
# read.
SLOW_READ = 5.0
UNWAITED = 0.8 * SLOW_READ


def queued_engine(tiny_qwen3, store_dir, delay: float):
    llm = LLM(str(tiny_qwen3), **opts(
        kv_store=f"tests.kvcache.test_prefetch_policies:SlowFileStore?dir={store_dir}&delay={delay}",
        hicache_prefetch_policy="timeout", hicache_load_policy="cost", max_prefill_tokens=8))
    cost, ps = llm.engine.kv.cost, llm.engine.kv.page_size
    # a token computes in 10 ms, a page fetches in 4 pages' compute: neither a fetch nor a split pays
    cost.fix(1e2, {"L3": cost.page_bytes / (4 * ps * 1e-2), "L2": 1e15})
    assert cost.l3_plan() == "skip"
    return llm


def test_a_queued_request_fetches_its_hit_while_it_waits(tiny_qwen3, filled_store):
    store_dir, ref = filled_store
    llm = queued_engine(tiny_qwen3, store_dir, delay=0.0)
    engine, tok = llm.engine, llm.tokenizer
    first, ids = tok.encode(FIRST), tok.encode(LONG)
    ps = engine.kv.page_size
    assert len(first) >= 4 * 8 * ps  # its prefill fills steps whose time covers 8+ pages of fetching
    engine.add_request("first", first, GREEDY)
    engine.add_request("long", ids, GREEDY)
    op = engine.kv.prefetcher.ops["long"]
    assert op.hidden_until > op.created
    engine.step()  # the lookup answers, the fetch starts
    deadline = time.monotonic() + 10
    while (op.fetch is None or not op.fetch.done()) and time.monotonic() < deadline:
        time.sleep(0.01)
        engine.kv.poll()
    outs, _ = run_all(engine)
    assert outs["long"] == ref[LONG]
    stats = engine.stats()
    stored = (len(ids) - 1) // ps
    assert stats["tiers"]["prefetch"]["hidden"] == 1
    assert 0 < stats["tier_hits"]["L3"]["tokens"] <= stored * ps
    assert stats["tier_hits"]["L3"]["tokens"] == stats["tiers"]["prefetch"]["pages_fetched"] * ps
    engine.kv.check_no_leak(engine.live_pages())
    llm.close()


def test_a_hidden_fetch_never_delays_its_request(tiny_qwen3, filled_store):
    store_dir, ref = filled_store
    llm = queued_engine(tiny_qwen3, store_dir, delay=SLOW_READ)
    engine, tok = llm.engine, llm.tokenizer
    t0 = time.perf_counter()
    engine.add_request("first", tok.encode(FIRST), GREEDY)
    engine.add_request("long", tok.encode(LONG), GREEDY)
    outs, first = run_all(engine)
    assert outs["long"] == ref[LONG]
    assert time.perf_counter() - t0 < UNWAITED and first["long"] < UNWAITED  # never waited for the store's read
    stats = engine.stats()
    assert stats["tiers"]["prefetch"]["hidden"] == 1 and stats["tier_hits"]["L3"]["tokens"] == 0
    assert stats["tiers"]["L3"]["recomputed_tokens"] > 0
    engine.kv.prefetcher.drain()
    engine.kv.check_no_leak(engine.live_pages())
    llm.close()


def test_a_request_with_nothing_ahead_does_not_wait_on_a_slow_store(tiny_qwen3, filled_store):
    store_dir, ref = filled_store
    llm = queued_engine(tiny_qwen3, store_dir, delay=SLOW_READ)
    engine = llm.engine
    engine.add_request("long", llm.tokenizer.encode(LONG), GREEDY)
    assert "long" not in engine.kv.prefetcher.ops  # recomputes at once; its lookup only counts the hit
    outs, first = run_all(engine)
    assert outs["long"] == ref[LONG] and first["long"] < UNWAITED
    assert engine.stats()["tiers"]["prefetch"]["hidden"] == 0
    engine.kv.prefetcher.drain()
    llm.close()


def test_a_fetch_while_queued_takes_only_free_host_pages(tiny_qwen3, filled_store):
    """What costs the request nothing must not cost the host tier its copies either: with no host page
    free, the queued request fetches nothing (and evicts nothing) and recomputes."""
    store_dir, ref = filled_store
    llm = queued_engine(tiny_qwen3, store_dir, delay=0.0)
    engine, tok = llm.engine, llm.tokenizer
    engine.add_request("warm", tok.encode(OTHER), GREEDY)  # its host copies are what an eviction would take
    run_all(engine)
    engine.kv.flush()
    held = engine.kv.host_allocator.alloc(engine.kv.host_allocator.num_free)
    copies = sum(len(n.host_pages) for n in engine.kv.radix.nodes() if n.host_pages)
    assert engine.kv.host_allocator.num_free == 0 < copies  # full, of copies an eviction may take
    engine.add_request("first", tok.encode(FIRST), GREEDY)
    engine.add_request("long", tok.encode(LONG), GREEDY)
    op = engine.kv.prefetcher.ops["long"]
    deadline = time.monotonic() + 10
    while op.fetch is None and time.monotonic() < deadline:  # the lookup answered and the fetch was sized
        time.sleep(0.01)
        engine.kv.poll()
    assert op.hidden_until > time.monotonic() and op.check.result() == 0 < op.unfetched  # sized to nothing
    outs, _ = run_all(engine)
    assert outs["long"] == ref[LONG]
    stats = engine.stats()
    assert stats["tiers"]["prefetch"]["hidden"] == 1 and stats["tiers"]["prefetch"]["pages_requested"] == 0
    assert stats["tier_hits"]["L3"]["tokens"] == 0
    engine.kv.host_allocator.free(held)
    engine.kv.check_no_leak(engine.live_pages())
    llm.close()
