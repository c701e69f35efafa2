"""Property test of the tiered KV cache: thousands of random operations (admit with L2 load-back and L3
prefetch, finish, abort, forced device/host eviction, store wipes) never leak or double-own a device slot
or host page, and every restored prefix holds exactly the KV that was computed for it."""
from __future__ import annotations

import random

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.kvcache.tiers import make_tiered, run_copies
from tierlm.kvcache.contracts import Verdict
from tierlm.kvcache.keys import PageHasher
from tierlm.kvcache.manager import KVCacheManager
from tierlm.kvcache.stores.memory import MemoryKVStore


def value(tokens: list[int], pos: int) -> float:
    """The 'KV' a model would compute at `pos`: a function of the whole prefix (exact in float32)."""
    return float(hash(tuple(tokens[:pos + 1])) % 100_003)


def make(page_size: int, policy: str, threads: bool, with_store: bool, **setup):
    store = MemoryKVStore() if with_store else None
    return make_tiered(page_size, 24, 20, store=store, threads=threads, write_policy=policy, write_threshold=2,
                       hasher=PageHasher("test", page_size) if store else None, prefetch_policy="wait_complete",
                       prefetch_threshold=1, **setup)


def slots(pages: list[int], page_size: int, start: int, end: int) -> torch.Tensor:
    pos = torch.arange(start, end)
    return torch.tensor(pages, dtype=torch.int64)[pos // page_size] * page_size + pos % page_size


def admit(kv: KVCacheManager, pool, tokens: list[int], rid: str):
    """What the scheduler and the worker do: prefetch gate, admit (match, room check, load-back), the step's
    copies, then the request's own KV."""
    ps = kv.page_size
    kv.prefetch_start(rid, tokens)
    got = kv.admit(rid, tokens, len(tokens), len(tokens), 0)
    while got is Verdict.PREFETCHING:
        kv.poll()
        kv.idle_wait(0.01)
        got = kv.admit(rid, tokens, len(tokens), len(tokens), 0)
    if isinstance(got, Verdict):  # refused (NEVER) or given up (WAIT; it is not retried): as the scheduler
        kv.prefetch_cancel(rid)  # does for both, its prefetch is cancelled and its host pages go back
        return None
    to_load = len(kv.copies.pending.load_device)
    run_copies(kv)  # what the worker does once per step, before the forward
    pages = got.pages
    n = len(pages) * ps
    got_kv = pool["k"][0][slots(pages, ps, 0, n)].flatten().tolist()
    assert got_kv == [value(tokens, i) for i in range(n)], "restored KV differs from what was computed"
    assert kv.grow(pages, len(tokens)), "room check passed but allocation failed"
    if len(tokens) > n:
        pool["k"][0][slots(pages, ps, n, len(tokens))] = torch.tensor(
            [value(tokens, i) for i in range(n, len(tokens))]).view(-1, 1, 1)
    return got.row, tokens, pages, got.node, got.num_prefix_pages, to_load


OPS = st.lists(st.tuples(st.sampled_from(["start", "start", "finish", "abort", "evict", "evict_host", "drop",
                                          "wipe_host", "poll"]), st.integers(0, 10**6)), max_size=80)


def run_ops(ops, page_size, policy, threads, with_store, prepare=None, **setup):
    """`prepare(kv)`, when given, runs on the new cache first; `setup`: more `TierSetup` fields."""
    kv, pool, _ = make(page_size, policy, threads, with_store, **setup)
    if prepare is not None:
        prepare(kv)
    running = []
    try:
        for i, (op, seed) in enumerate(ops):
            rng = random.Random(seed)
            if op == "start":
                tokens = [rng.randrange(3) for _ in range(rng.randrange(1, 30))]
                r = admit(kv, pool, tokens, f"r{i}")
                if r is not None:
                    running.append(r)
            elif op in ("finish", "abort") and running:
                row, tokens, pages, node, n_prefix, _ = running.pop(rng.randrange(len(running)))
                kv.release(row, tokens, pages, node, n_prefix, cache=op == "finish")
            elif op == "evict":
                kv.evict(rng.randrange(1, 8))
            elif op == "evict_host":
                kv.evict_host(rng.randrange(1, 8))
            elif op == "drop":
                kv.drop_device_cache()
            elif op == "wipe_host":
                kv.drop_host_cache()
            else:
                run_copies(kv)
                kv.poll()
            kv.check_no_leak([p[n:] for _, _, p, _, n, _ in running])
        for row, tokens, pages, node, n_prefix, _ in running:
            kv.release(row, tokens, pages, node, n_prefix, cache=False)
        kv.flush()
        kv.drop_device_cache()
        kv.drop_host_cache()
        kv.check_no_leak()
        assert kv.allocator.num_free == kv.capacity_pages and kv.radix.cached_pages == 0
        assert kv.host_allocator.num_free == kv.host_allocator.num_pages
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
