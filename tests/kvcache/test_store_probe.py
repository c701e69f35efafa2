"""`StoreProbe` alone: one probe at a time, its fetch only after a launch, and every ending frees or keeps
its host pages exactly once."""
from __future__ import annotations

import concurrent.futures as cf
import time

from tierlm.kvcache.futures import finished
from tierlm.kvcache.metrics import TierMetrics
from tierlm.kvcache.prefetch_op import PrefetchOp
from tierlm.kvcache.stores.base import DEFAULT_CALL_PAGES
from tierlm.kvcache.store_probe import StoreProbe


def _op(stored: int) -> PrefetchOp:
    return PrefetchOp(tokens=[], keys=[], first_page=0, created=time.monotonic(), check=finished(lambda: stored))


def _probe(read, free_pages: int = 100, room: int = 100):
    taken, freed, kept = [], [], []

    def alloc(n):
        pages = list(range(len(taken), len(taken) + n))
        taken.extend(pages)
        return pages

    probe = StoreProbe(read, alloc, freed.extend, lambda: free_pages, lambda: room, kept.append, 4, TierMetrics())
    return probe, taken, freed, kept


def test_one_probe_at_a_time_and_its_fetch_waits_for_a_launch():
    probe, taken, _, kept = _probe(lambda op: finished(lambda: None))
    first, second = _op(50), _op(50)
    probe.begin(first)
    probe.begin(second)  # one in flight already: ignored
    assert probe.op is first and probe.metrics.prefetch["probes"] == 1
    probe.advance(start_fetch=False)  # a poll beside the launch: nothing is fetched
    assert first.fetch is None and not taken
    probe.advance(start_fetch=True)  # one store call of pages, then done at once (the read finished)
    assert len(taken) == DEFAULT_CALL_PAGES and kept == [first] and probe.op is None


def test_a_probe_takes_only_free_pages_and_none_below_the_threshold():
    probe, taken, _, kept = _probe(lambda op: finished(lambda: None), free_pages=3)
    probe.begin(_op(50))
    probe.advance(start_fetch=True)
    assert len(taken) == 3 and len(kept) == 1
    probe.begin(_op(3))  # the store holds fewer pages than the threshold (4): nothing to measure
    probe.advance(start_fetch=True)
    assert len(taken) == 3 and len(kept) == 1 and probe.op is None


def test_a_failed_probe_frees_its_pages_and_keeps_nothing():
    fut = cf.Future()
    probe, taken, freed, kept = _probe(lambda op: fut)
    probe.begin(_op(50))
    probe.advance(start_fetch=True)
    assert probe.op is not None and taken
    fut.set_exception(OSError("the store went away"))
    probe.advance(start_fetch=False)
    assert freed == taken and not kept and probe.op is None
