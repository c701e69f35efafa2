"""KV events of the controller: replaying what the sink was told gives exactly the pages the radix tree holds
per medium, after every operation of a random workload (admission with L2 load-back and L3 prefetch,
finish, abort, device and host eviction, cache drops), and every stored event names its pages consistently
(keys = the chain of its tokens from its parent key)."""
from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.kvcache.tiers import make_tiered, run_copies
from tierlm.kvcache.contracts import Verdict
from tierlm.kvcache.events import CPU, DISK, GPU, MEDIA
from tierlm.kvcache.keys import PageHasher
from tierlm.kvcache.manager import KVCacheManager
from tierlm.kvcache.stores.memory import MemoryKVStore


class Recorder:
    """A sink that replays events into per-medium sets and checks each event against the previous state."""

    def __init__(self, hasher: PageHasher) -> None:
        self.hasher = hasher
        self.held: dict[str, set[str]] = {m: set() for m in MEDIA}
        self.calls: list[tuple] = []

    def stored(self, medium, page_keys, parent_key, token_ids):
        self.calls.append(("stored", medium, tuple(page_keys)))
        assert page_keys and len(token_ids) == len(page_keys) * self.hasher.page_size
        assert self.hasher.chain(list(token_ids), parent_key) == list(page_keys), "keys are not the tokens' chain"
        assert parent_key is None or parent_key in self.held[GPU] | self.held[CPU], "parent page not held"
        assert not self.held[medium] & set(page_keys), f"{medium} page stored twice"
        self.held[medium] |= set(page_keys)

    def removed(self, medium, page_keys):
        self.calls.append(("removed", medium, tuple(page_keys)))
        assert set(page_keys) <= self.held[medium], f"{medium} page removed but never stored"
        self.held[medium] -= set(page_keys)

    def cleared(self):
        self.calls.append(("cleared",))
        for m in MEDIA:
            self.held[m].clear()


def tree_sets(kv: KVCacheManager) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {m: set() for m in MEDIA}
    for node in kv.radix.nodes():
        if node.pages is not None:
            out[GPU] |= set(node.page_hashes)
        if node.host_pages is not None:
            out[CPU] |= set(node.page_hashes)
        if node.in_store:
            out[DISK] |= set(node.page_hashes)
    return out


def admit(kv: KVCacheManager, tokens: list[int], rid: str):
    kv.prefetch_start(rid, tokens)
    got = kv.admit(rid, tokens, len(tokens), len(tokens), 0)
    while got is Verdict.PREFETCHING:
        kv.poll()
        kv.idle_wait(0.01)
        got = kv.admit(rid, tokens, len(tokens), len(tokens), 0)
    if isinstance(got, Verdict):
        kv.prefetch_cancel(rid)
        return None
    if kv.tiers is not None:
        run_copies(kv)  # the step's copies, as the worker runs them
    assert kv.grow(got.pages, len(tokens))
    return got.row, tokens, got.pages, got.node, got.num_prefix_pages


def run_workload(kv: KVCacheManager, rec: Recorder, ops, tiers: bool) -> None:
    running = []
    for i, (op, seed) in enumerate(ops):
        rng = random.Random(seed)
        if op == "start":
            r = admit(kv, [rng.randrange(3) for _ in range(rng.randrange(1, 30))], f"r{i}")
            if r is not None:
                running.append(r)
        elif op in ("finish", "abort") and running:
            row, tokens, pages, node, n_prefix = running.pop(rng.randrange(len(running)))
            kv.release(row, tokens, pages, node, n_prefix, cache=op == "finish")
        elif op == "evict":
            kv.evict(rng.randrange(1, 8))
        elif tiers and op == "evict_host":
            kv.evict_host(rng.randrange(1, 8))
        elif op == "drop":
            kv.drop_device_cache()
        elif tiers and op == "wipe_host":
            kv.drop_host_cache()
        elif tiers:
            run_copies(kv)
            kv.poll()
        assert rec.held == tree_sets(kv), f"replayed events differ from the tree after {op}"
    for row, tokens, pages, node, n_prefix in running:
        kv.release(row, tokens, pages, node, n_prefix, cache=True)
    assert rec.held == tree_sets(kv)


OPS = st.lists(st.tuples(st.sampled_from(["start", "start", "start", "finish", "finish", "abort", "evict",
                                          "evict_host", "drop", "wipe_host", "poll"]), st.integers(0, 10**6)),
               max_size=60)


@settings(max_examples=60, deadline=None)
@given(ops=OPS, page_size=st.sampled_from([1, 2, 4]),
       policy=st.sampled_from(["write_through", "write_through_selective", "write_back"]), with_store=st.booleans())
def test_replayed_events_equal_the_tree_per_tier(ops, page_size, policy, with_store):
    hasher = PageHasher("test", page_size)
    rec = Recorder(hasher)
    kv, _, _ = make_tiered(page_size, 24, 20, store=MemoryKVStore() if with_store else None, threads=False,
                           write_policy=policy, write_threshold=2, hasher=hasher, prefetch_policy="wait_complete",
                           prefetch_threshold=1, events=rec)
    try:
        assert rec.calls == [("cleared",)], "a new cache first tells listeners it holds nothing"
        run_workload(kv, rec, ops, tiers=True)
    finally:
        kv.close()
    assert rec.calls[-1] == ("cleared",) and not any(rec.held.values()), "close clears every medium"


@settings(max_examples=30, deadline=None)
@given(ops=OPS, page_size=st.sampled_from([1, 4]))
def test_device_only_cache_reports_gpu_pages(ops, page_size):
    hasher = PageHasher("test", page_size)
    rec = Recorder(hasher)
    kv = KVCacheManager(24, page_size, 8, events=rec, hasher=hasher)
    run_workload(kv, rec, ops, tiers=False)
    assert not rec.held[CPU] and not rec.held[DISK]


def test_all_media_and_moves_are_reported():
    """A deterministic walk through the tiers: insert (GPU), backup (CPU + DISK), device eviction of a
    backed-up node (GPU removed, CPU stays: a move down), load-back at admission (GPU again: a move up),
    host eviction, and a prefix fetched back from L3 after it left the tree (CPU + DISK)."""
    hasher = PageHasher("test", 2)
    rec = Recorder(hasher)
    kv, _, _ = make_tiered(2, 16, 16, store=MemoryKVStore(), threads=False, write_policy="write_through",
                           hasher=hasher, prefetch_policy="wait_complete", prefetch_threshold=1, events=rec)
    tokens = [1, 2, 3, 4, 5, 6]
    row, _, pages, node, n = admit(kv, tokens, "a")
    kv.release(row, tokens, pages, node, n, cache=True)
    keys = hasher.chain(tokens)
    assert rec.held == {GPU: set(keys), CPU: set(keys), DISK: set(keys)}
    run_copies(kv)
    kv.drop_device_cache()
    assert rec.held == {GPU: set(), CPU: set(keys), DISK: set(keys)}
    r = admit(kv, tokens + [7], "b")
    assert rec.held[GPU] == set(keys)
    kv.release(r[0], r[1], r[2], r[3], r[4], cache=False)
    kv.drop_device_cache()
    kv.drop_host_cache()
    assert rec.held == {GPU: set(), CPU: set(), DISK: set()}, "a prefix out of the tree is reported gone"
    admit(kv, tokens + [7], "c")  # L3 prefetch brings it back through host pages
    assert rec.held[CPU] == set(keys) and rec.held[DISK] == set(keys) and rec.held[GPU] == set(keys)
    kv.close()


def test_events_need_page_keys():
    with pytest.raises(ValueError, match="PageHasher"):
        KVCacheManager(8, 2, 2, events=Recorder(PageHasher("t", 2)))
