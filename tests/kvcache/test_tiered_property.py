"""Property test of the tiered KV cache: thousands of random operations (admit with L2 load-back and L3
prefetch, finish, abort, forced device/host eviction, store wipes) never leak or double-own a device slot
or host page, and every restored prefix holds exactly the KV that was computed for it."""
from __future__ import annotations

import random

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tierlm.kvcache.keys import PageHasher
from tierlm.kvcache.pool import KVPool
from tierlm.kvcache.stores.memory import MemoryKVStore
from tierlm.kvcache.tiered import TieredKVCacheManager


def value(tokens: list[int], pos: int) -> float:
    """The 'KV' a model would compute at `pos`: a function of the whole prefix (exact in float32)."""
    return float(hash(tuple(tokens[:pos + 1])) % 100_003)


def make(page_size: int, policy: str, threads: bool, with_store: bool) -> TieredKVCacheManager:
    pool = KVPool(24, page_size, 1, 1, 1, torch.float32, torch.device("cpu"))
    store = MemoryKVStore() if with_store else None
    return TieredKVCacheManager(page_size, 8, 64, pool, host_pages=20, write_policy=policy, write_threshold=2,
                                store=store, hasher=PageHasher("test", page_size) if store else None,
                                prefetch_policy="wait_complete", prefetch_threshold=1, threads=threads)


def slots(pages: list[int], page_size: int, start: int, end: int) -> torch.Tensor:
    pos = torch.arange(start, end)
    return torch.tensor(pages, dtype=torch.int64)[pos // page_size] * page_size + pos % page_size


def admit(kv: TieredKVCacheManager, tokens: list[int], rid: str):
    """What the scheduler does: prefetch gate, match+lock, room check, load-back, own pages."""
    pool, ps = kv.transfer.dev, kv.page_size
    kv.prefetch_start(rid, tokens)
    while not kv.prefetch_ready(rid):
        kv.poll()
        kv.idle_wait(0.01)
    m = kv.match_and_lock(tokens)
    total = kv.pages_for(len(tokens))
    to_load = m.num_host_pages
    if total - len(m.pages) + kv.reserved_extra > kv.available_pages():
        kv.unlock(m.node)
        return None
    pages = kv.load_back(m)
    if pages is None:
        kv.unlock(m.node)
        return None
    kv.note_admitted(rid, m)
    kv.start_loads()  # what the engine does once per step, before the forward
    n = len(pages) * ps
    got = pool.k[0][slots(pages, ps, 0, n)].flatten().tolist()
    assert got == [value(tokens, i) for i in range(n)], "restored KV differs from what was computed"
    own = kv.alloc(total - len(pages))
    assert own is not None, "room check passed but allocation failed"
    pages = pages + own
    if len(tokens) > n:
        pool.k[0][slots(pages, ps, n, len(tokens))] = torch.tensor(
            [value(tokens, i) for i in range(n, len(tokens))]).view(-1, 1, 1)
    return tokens, pages, m.node, len(pages) - len(own), to_load


OPS = st.lists(st.tuples(st.sampled_from(["start", "start", "finish", "abort", "evict", "evict_host", "drop",
                                          "wipe_host", "poll"]), st.integers(0, 10**6)), max_size=80)


def run_ops(ops, page_size, policy, threads, with_store):
    kv = make(page_size, policy, threads, with_store)
    kv.reserved_extra = 0
    running = []
    try:
        for i, (op, seed) in enumerate(ops):
            rng = random.Random(seed)
            if op == "start":
                tokens = [rng.randrange(3) for _ in range(rng.randrange(1, 30))]
                r = admit(kv, tokens, f"r{i}")
                if r is not None:
                    running.append(r)
            elif op in ("finish", "abort") and running:
                tokens, pages, node, n_prefix, _ = running.pop(rng.randrange(len(running)))
                kv.release(tokens, pages, node, n_prefix, cache=op == "finish")
            elif op == "evict":
                kv.radix.evict(rng.randrange(1, 8))
            elif op == "evict_host":
                kv.radix.evict_host(rng.randrange(1, 8))
            elif op == "drop":
                kv.drop_device_cache()
            elif op == "wipe_host":
                kv.drop_host_cache()
            else:
                kv.poll()
            kv.check_no_leak([p[n:] for _, p, _, n, _ in running])
        for tokens, pages, node, n_prefix, _ in running:
            kv.release(tokens, pages, node, n_prefix, cache=False)
        kv.flush()
        kv.drop_device_cache()
        kv.drop_host_cache()
        kv.check_no_leak()
        assert kv.allocator.num_free == kv.capacity_pages and kv.radix.cached_pages == 0
        assert kv.host.allocator.num_free == kv.host.num_pages
    finally:
        kv.close()


@settings(max_examples=100, deadline=None)
@given(ops=OPS, page_size=st.sampled_from([1, 2, 4]),
       policy=st.sampled_from(["write_through", "write_through_selective", "write_back"]), with_store=st.booleans())
def test_random_tier_operations_inline_io(ops, page_size, policy, with_store):
    run_ops(ops, page_size, policy, threads=False, with_store=with_store)


@settings(max_examples=15, deadline=None)
@given(ops=OPS, policy=st.sampled_from(["write_through", "write_back"]))
def test_random_tier_operations_background_io(ops, policy):
    run_ops(ops, 2, policy, threads=True, with_store=True)
