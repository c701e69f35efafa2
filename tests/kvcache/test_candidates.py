"""The eviction candidates kept between evictions (`CandidateHeap`): least recently used first across
evictions without listing the tree again, nodes used since they went in take their new place, nodes that
joined after the scan are found once the heap runs out, and random tier operations on the kept heap never
leak a page."""
from __future__ import annotations

from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.kvcache.test_radix import insert, tree
from tests.kvcache.test_tiered_property import OPS, run_ops
from tierlm.kvcache import candidates


def lazy(evictor) -> None:
    """Scan only when the heap runs out (never because the tree is small or has been touched)."""
    heap = evictor.device_candidates
    heap.rescan_below, heap.rescan_share = 0, float("inf")


def cached(r, tokens: list[int]) -> bool:
    return len(r.match_prefix(tokens).pages) == len(tokens)


def test_order_holds_across_evictions_without_a_new_scan():
    a, r, ev = tree(1, 16)
    lazy(ev)
    for t in (1, 2, 3, 4):
        insert(r, a, [t], a.alloc(1))
    assert ev.evict_device(1) == 1 and not cached(r, [1])
    scans = ev.device_candidates.scans
    r.match_prefix([2])  # used since the scan: it goes back behind 3 and 4
    assert ev.evict_device(1) == 1 and not cached(r, [3])
    assert ev.evict_device(1) == 1 and not cached(r, [4])
    assert ev.device_candidates.scans == scans and cached(r, [2])


def test_nodes_that_joined_after_the_scan_are_found_when_the_heap_runs_out():
    a, r, ev = tree(1, 16)
    lazy(ev)
    insert(r, a, [1], a.alloc(1))
    insert(r, a, [2], a.alloc(1))
    assert ev.evict_device(1) == 1  # scans: [1] and [2]; frees [1]
    insert(r, a, [3], a.alloc(1))
    insert(r, a, [4], a.alloc(1))
    assert ev.evict_device(3) == 3  # [2] from the heap, then a new scan for [3] and [4]
    assert r.evictable_pages == 0 and a.num_free == 15


def test_a_parent_joins_once_its_last_child_is_evicted_and_locked_nodes_stay():
    a, r, ev = tree(1, 16)
    lazy(ev)
    insert(r, a, [1, 2], a.alloc(2))
    insert(r, a, [1, 3], a.alloc(2))  # splits: [1] with children [2] and [3]
    insert(r, a, [5], a.alloc(1))
    locked = r.match_prefix([5]).node
    r.lock(locked)
    assert ev.evict_device(3) == 3  # [2], [3], then their parent [1]; [5] is locked
    assert cached(r, [5]) and not cached(r, [1])
    r.unlock(locked)


@settings(max_examples=60, deadline=None)
@given(ops=OPS, page_size=st.sampled_from([1, 2]),
       policy=st.sampled_from(["write_through", "write_back"]), with_store=st.booleans())
def test_random_tier_operations_on_a_kept_heap_never_leak(ops, page_size, policy, with_store):
    with mock.patch.object(candidates, "RESCAN_BELOW", 0), mock.patch.object(candidates, "RESCAN_SHARE", 1e9):
        run_ops(ops, page_size, policy, threads=False, with_store=with_store)
