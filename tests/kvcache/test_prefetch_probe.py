"""Measuring the L3 store never delays a request: an "explore" decision admits its request at once (it
recomputes) and probes the store in the background; the probe's fetch feeds the cost model, its pages join
the tree as host-only nodes, and no way of ending it (completion, failure, cancellation, shutdown) leaks a
host page."""
from __future__ import annotations

import threading
import time

import pytest

from tests.kvcache.tiers import make_tiered, run_copies
from tierlm.kvcache.cost import MIN_STORE_SAMPLES
from tierlm.kvcache.keys import PageHasher
from tierlm.kvcache.stores.memory import MemoryKVStore

PS = 2  # tokens per page
PAGES = 12  # pages of the prompt the store holds
HOST_PAGES = 64


class GatedReadStore(MemoryKVStore):
    """A memory store whose lookups and reads wait for their gates (a slow store); reads may raise."""

    def __init__(self) -> None:
        super().__init__()
        self.lookup_gate, self.read_gate = threading.Event(), threading.Event()
        self.lookup_gate.set(), self.read_gate.set()
        self.fail_reads = False
        self.lose_pages = False  # reads find nothing (the pages went between the lookup and the read)

    def batch_exists(self, keys):
        assert self.lookup_gate.wait(10)
        return super().batch_exists(keys)

    def batch_get(self, keys, host_pages):
        assert self.read_gate.wait(10)
        if self.fail_reads:
            raise OSError("the store went away")
        if self.lose_pages:
            return [False] * len(keys)
        return super().batch_get(keys, host_pages)


@pytest.fixture
def stored():
    """A manager whose L3 store alone holds a prompt of PAGES pages (device and host copies dropped), with
    an unmeasured store under the cost policy: the next request for the prompt explores."""
    store = GatedReadStore()
    kv, _, _ = make_tiered(PS, 40, HOST_PAGES, store=store, hasher=PageHasher("t", PS), io_backend="torch",
                           load_policy="cost", prefetch_threshold=4 * PS)
    tokens = list(range(100, 100 + PAGES * PS))
    kv.release(None, tokens, kv.alloc(PAGES), None, 0, cache=True)
    run_copies(kv)
    kv.flush()
    kv.drop_device_cache()
    kv.drop_host_cache()
    assert store.stats()["pages_written"] == PAGES and kv.radix.match_length(tokens) == 0
    assert kv.host_allocator.num_free == HOST_PAGES
    try:
        yield kv, store, tokens + [7]
    finally:
        store.lookup_gate.set(), store.read_gate.set()
        kv.close()


def settle(kv, until, timeout: float = 5.0) -> None:
    """Poll the manager and tell it of a launch (as each engine step does), at least once, until `until()`
    holds."""
    deadline = time.monotonic() + timeout
    kv.poll()
    kv.after_launch()
    while not until():
        assert time.monotonic() < deadline, "the probe did not get there in time"
        kv.idle_wait(0.01)
        kv.poll()
        kv.after_launch()


def test_an_exploring_request_is_ready_at_once_and_the_probe_measures_in_the_background(stored):
    kv, store, prompt = stored
    store.lookup_gate.clear(), store.read_gate.clear()
    kv.prefetch_start("r", prompt)
    assert kv.prefetcher.ready("r")  # not held up by the lookup, which has not even answered
    got = kv.admit("r", prompt, len(prompt) + 2, len(prompt) + 2, 0)
    assert got.num_prefix_pages == 0  # admitted to recompute
    assert kv.prefetcher.probe is None and store.stats()["exists_calls"] == 0  # held back until a launch
    kv.after_launch()
    assert kv.prefetcher.probe is not None and kv.cost.loads["L3"].samples == 0
    store.lookup_gate.set()
    settle(kv, lambda: kv.prefetcher.held_pages)  # the probe's fetch holds host pages while it runs
    assert len(kv.prefetcher.held_pages) == min(PAGES, store.call_pages)
    kv.check_no_leak([got.pages])
    store.read_gate.set()
    settle(kv, lambda: kv.prefetcher.probe is None)
    assert kv.cost.loads["L3"].samples == 1  # the store is measured
    match = kv.radix.match_prefix(prompt)
    assert match.num_host_pages == PAGES and not match.pages  # kept as host-only nodes for later requests
    assert kv.tier_stats()["L3"]["recomputed_tokens"] == PAGES * PS  # the explorer recomputed its L3 hit
    assert kv.tier_stats()["prefetch"]["probes"] == 1
    kv.check_no_leak([got.pages])


def test_one_probe_at_a_time(stored):
    kv, store, prompt = stored
    store.lookup_gate.clear()
    kv.prefetch_start("a", prompt)
    kv.after_launch()
    first = kv.prefetcher.probe
    kv.prefetch_start("b", prompt)  # still unmeasured: recomputes, no second probe
    kv.prefetch_start("c", prompt)  # explores too, as the same step's arrivals do; the first one probes
    kv.after_launch()
    assert first is not None and kv.prefetcher.probe is first
    assert all(kv.prefetcher.ready(r) for r in "abc")
    store.lookup_gate.set()
    settle(kv, lambda: kv.prefetcher.probe is None)
    assert kv.tier_stats()["prefetch"]["probes"] == 1 and kv.cost.loads["L3"].samples == 1


def test_a_burst_of_arrivals_measures_the_store_one_probe_after_another(stored):
    """Arrivals that recomputed beside the first probe each become the next probe while the store is not
    measured enough, so one burst measures it; then probing stops."""
    kv, store, prompt = stored
    for r in "abcdef":
        kv.prefetch_start(r, prompt)
    assert all(kv.prefetcher.ready(r) for r in "abcdef")
    in_flight = []

    def measured() -> bool:
        in_flight.append(kv.prefetcher.probe)
        return kv.cost.store_measured()

    settle(kv, measured)
    assert kv.tier_stats()["prefetch"]["probes"] == MIN_STORE_SAMPLES == kv.cost.loads["L3"].samples
    assert len({id(p) for p in in_flight if p is not None}) <= MIN_STORE_SAMPLES
    for _ in range(3):
        kv.poll()
        kv.after_launch()
    assert kv.tier_stats()["prefetch"]["probes"] == MIN_STORE_SAMPLES and kv.prefetcher.probe is None
    kv.check_no_leak()


def test_cancelling_the_explorer_leaves_the_probe_and_leaks_nothing(stored):
    kv, store, prompt = stored
    store.read_gate.clear()
    kv.prefetch_start("r", prompt)
    settle(kv, lambda: kv.prefetcher.held_pages)
    kv.prefetch_cancel("r")  # the request left; the probe is the prefetcher's, it goes on
    store.read_gate.set()
    settle(kv, lambda: kv.prefetcher.probe is None)
    assert kv.radix.match_prefix(prompt).num_host_pages == PAGES
    kv.check_no_leak()
    assert kv.host_allocator.num_free == HOST_PAGES - PAGES


def test_draining_with_a_probe_in_flight_frees_its_host_pages(stored):
    kv, store, prompt = stored
    store.read_gate.clear()
    kv.prefetch_start("r", prompt)
    settle(kv, lambda: kv.prefetcher.held_pages)
    threading.Timer(0.05, store.read_gate.set).start()  # the store call in progress ends soon after
    kv.prefetcher.drain()
    assert kv.prefetcher.probe is None and not kv.prefetcher.held_pages
    assert kv.host_allocator.num_free == HOST_PAGES and kv.radix.match_length(prompt) == 0
    assert kv.cost.loads["L3"].samples == 0
    kv.check_no_leak()


def test_a_probe_whose_store_call_fails_frees_its_pages_and_measures_nothing(stored):
    kv, store, prompt = stored
    store.fail_reads = True
    kv.prefetch_start("r", prompt)
    settle(kv, lambda: kv.prefetcher.probe is None)
    assert kv.host_allocator.num_free == HOST_PAGES and kv.radix.match_length(prompt) == 0
    assert kv.cost.loads["L3"].samples == 0
    kv.check_no_leak()


def test_a_probe_takes_only_free_host_pages(stored):
    kv, store, prompt = stored
    other = list(range(500, 508))
    kv.release(None, other, kv.alloc(4), None, 0, cache=True)
    run_copies(kv)
    kv.drop_device_cache()  # 4 evictable host-only pages in the tree
    held = kv.host_allocator.alloc(HOST_PAGES - 4 - 3)  # 3 host pages free
    kv.prefetch_start("r", prompt)
    settle(kv, lambda: kv.prefetcher.probe is None)
    assert kv.tier_stats()["prefetch"]["pages_requested"] == 3 and kv.cost.loads["L3"].samples == 1
    assert kv.radix.match_prefix(prompt).num_host_pages == 3
    assert kv.radix.match_prefix(other).num_host_pages == 4  # nothing evicted for the probe
    kv.host_allocator.free(held)
    kv.check_no_leak()


def test_a_probe_that_gets_no_pages_gives_the_cost_model_no_bandwidth(stored):
    kv, store, prompt = stored
    store.lose_pages = True  # every read misses, at once
    kv.prefetch_start("r", prompt)
    settle(kv, lambda: kv.prefetcher.probe is None)
    assert kv.cost.loads["L3"].samples == 0  # nothing arrived: no rate, not a fast one
    assert kv.radix.match_length(prompt) == 0
    kv.check_no_leak([])
    assert kv.host_allocator.num_free == HOST_PAGES
