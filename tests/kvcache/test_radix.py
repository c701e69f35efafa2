"""Radix cache and allocator invariants, including a property test over random operation sequences."""
from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tierlm.kvcache.accounting import check_tree
from tierlm.kvcache.allocator import PageAllocator
from tierlm.kvcache.contracts import Verdict
from tierlm.kvcache.eviction import Evictor
from tierlm.kvcache.manager import KVCacheManager
from tierlm.kvcache.radix import RadixCache


def test_allocator_alloc_free_and_double_free():
    a = PageAllocator(5, reserved=1)
    pages = a.alloc(4)
    assert sorted(pages) == [1, 2, 3, 4] and a.alloc(1) is None
    a.free(pages[:2])
    with pytest.raises(RuntimeError, match="double free"):
        a.free(pages[:1])
    with pytest.raises(ValueError):
        a.free([0])
    assert a.num_free == 2


def tree(page_size: int, num_pages: int) -> tuple[PageAllocator, RadixCache, Evictor]:
    a = PageAllocator(num_pages, reserved=1)
    r = RadixCache(page_size)
    return a, r, Evictor(r, a.free, a.free, lambda futures: None)


def insert(r: RadixCache, a: PageAllocator, tokens: list[int], pages: list[int]) -> int:
    """Insert like the manager's release: the duplicates go back to the allocator."""
    present, dups, _ = r.insert_pages(tokens, pages)
    a.free(dups)
    return present


def test_match_insert_split_and_lock():
    a, r, ev = tree(2, 64)
    p1 = a.alloc(3)
    assert insert(r, a, [1, 2, 3, 4, 5, 6], p1) == 0
    m = r.match_prefix([1, 2, 3, 4, 9, 9, 7])
    assert m.pages == p1[:2]  # split after two pages
    r.lock(m.node)
    assert r.protected_pages == 2 and r.evictable_pages == 1
    p2 = a.alloc(3)
    assert insert(r, a, [1, 2, 3, 4, 7, 8], p2) == 4  # first two pages already there: duplicates freed
    assert ev.evict_device(100) == 2  # only the two unlocked leaves
    r.unlock(m.node)
    assert ev.evict_device(100) == 2
    check_tree(r)
    assert a.num_free == 63


def test_match_is_page_aligned():
    a, r, _ = tree(4, 16)
    insert(r, a, list(range(8)), a.alloc(2))
    assert len(r.match_prefix(list(range(7))).pages) == 1
    assert len(r.match_prefix(list(range(3))).pages) == 0
    assert len(r.match_prefix([0, 1, 2, 9, 4]).pages) == 0


@pytest.mark.parametrize("differ_at", [0, 1, 31, 32, 33, 63, 95, 99, None])
def test_match_inside_a_long_node_stops_at_the_first_differing_page(differ_at):
    # one node of 100 pages; a prompt that differs from it in page `differ_at` (by one token, in the middle
    # of the page) matches exactly the pages before it, whatever run of pages the comparison looks at
    a, r, _ = tree(4, 128)
    tokens = list(range(1000, 1400))
    insert(r, a, tokens, a.alloc(100))
    prompt = list(tokens) + [5, 6]
    if differ_at is not None:
        prompt[differ_at * 4 + 2] = -1
    expected = 100 if differ_at is None else differ_at
    assert r.match_key(prompt)[0] == expected
    assert len(r.match_prefix(prompt).pages) == expected
    assert len(r.match_prefix(tokens[:4 * 57 + 3]).pages) == 57  # shorter than the node (split or not)
    check_tree(r)


def test_lru_evicts_least_recent_first():
    a, r, ev = tree(1, 16)
    insert(r, a, [1], a.alloc(1))
    insert(r, a, [2], a.alloc(1))
    r.match_prefix([1])  # touch 1
    ev.evict_device(1)
    assert len(r.match_prefix([1]).pages) == 1 and len(r.match_prefix([2]).pages) == 0


ops = st.lists(st.tuples(st.sampled_from(["start", "finish", "abort", "evict"]), st.integers(0, 10**6)),
               max_size=120)


@settings(max_examples=150, deadline=None)
@given(ops=ops, page_size=st.sampled_from([1, 2, 4]))
def test_random_operations_never_leak_or_double_free(ops, page_size):
    """Requests match+lock a prefix, allocate their own pages and finish (cache) or abort (no cache) through
    the KVCacheManager the scheduler uses; evictions interleave. After every step each page is free,
    cached or owned exactly once (a double free raises inside the allocator)."""
    kv = KVCacheManager(48, page_size, max_reqs=8, enable_prefix_cache=True)
    running = []  # (tokens, pages, node, n_prefix_pages)
    for op, seed in ops:
        rng = random.Random(seed)
        if op == "start":
            tokens = [rng.randrange(3) for _ in range(rng.randrange(1, 24))]
            got = kv.admit(f"r{seed}", tokens, len(tokens), len(tokens), 0)
            if isinstance(got, Verdict):
                continue
            pages = got.pages
            assert kv.grow(pages, len(tokens))
            running.append((got.row, tokens, pages, got.node, got.num_prefix_pages))
        elif op in ("finish", "abort") and running:
            row, tokens, pages, node, n_prefix = running.pop(rng.randrange(len(running)))
            kv.release(row, tokens, pages, node, n_prefix, cache=op == "finish")
        elif op == "evict":
            kv.evict(rng.randrange(1, 8))
        kv.check_no_leak([pages[n:] for _, _, pages, _, n in running])
    for row, tokens, pages, node, n in running:
        kv.release(row, tokens, pages, node, n, cache=False)
    kv.evict(kv.radix.evictable_pages)
    assert kv.allocator.num_free == 47 and kv.radix.cached_pages == 0
