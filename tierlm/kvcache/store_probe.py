"""`StoreProbe`: the background measurement of the L3 store, one at a time.

When the cost model wants the store measured (never measured yet, or now and then after skipping it), the
lookup of a request that recomputes anyway becomes the probe (`begin`). Once that lookup has answered and a
step has been launched (`advance(start_fetch=True)`), one store call of pages is fetched, only into free host
pages (a probe never evicts) and only if the store holds at least the prefetch threshold; the finished probe
is timed for the cost model and its pages join the tree as host-only nodes for later requests (`finish`). A
probe that fails frees its pages and measures nothing. No request ever waits for it. While the store is not
measured enough, the lookups of requests that recomputed beside the probe are offered as the next probes
(`offer`, `next`), so one burst of arrivals measures the store.
"""
from __future__ import annotations

import concurrent.futures as cf
from collections import deque
from typing import Callable, Optional

from tierlm.kvcache.metrics import TierMetrics
from tierlm.kvcache.prefetch_op import PrefetchOp
from tierlm.kvcache.stores.base import DEFAULT_CALL_PAGES

SPARE = 8  # lookups kept as later probes while the store is not measured enough


class StoreProbe:
    """The probe in flight (`op`, None when none). `read(op)` submits the op's store reads; `alloc_host` and
    `free_host` take and give back host pages, `host_free()` counts the free ones (None: no limit but one
    store call) and `room()` how many more the prefetcher may hold; `finish(op)` times a completed probe and
    keeps its pages."""

    def __init__(self, read: Callable[[PrefetchOp], cf.Future], alloc_host: Callable[[int], Optional[list[int]]],
                 free_host: Callable[[list[int]], None], host_free: Optional[Callable[[], int]],
                 room: Callable[[], int], finish: Callable[[PrefetchOp], None], threshold_pages: int,
                 metrics: TierMetrics, call_pages: Callable[[], int] = lambda: DEFAULT_CALL_PAGES) -> None:
        self._read, self._alloc_host, self._free_host = read, alloc_host, free_host
        self._call_pages = call_pages  # one store call's pages: what a probe fetches
        self._host_free, self._room, self._finish = host_free, room, finish
        self.threshold_pages, self.metrics = threshold_pages, metrics
        self.op: Optional[PrefetchOp] = None
        self._spare: deque[PrefetchOp] = deque(maxlen=SPARE)  # lookups offered as later probes (`offer`)

    def begin(self, op: PrefetchOp) -> None:
        """Make `op` (a lookup under way) the probe, unless one is in flight already."""
        if self.op is None:
            self.op = op
            self.metrics.prefetch["probes"] += 1

    def offer(self, op: PrefetchOp) -> None:
        """While the store is not measured enough: `op` (a lookup under way, of a request that recomputed
        beside the probe in flight) may be a later probe (`next`); the last `SPARE` offered are kept."""
        self._spare.append(op)

    def next(self, measured: bool) -> None:
        """Begin the most recently offered lookup as the probe when none is in flight and the store is still
        not `measured` (its pages are the likeliest to be asked for again); forget the offers once it is."""
        if measured:
            self._spare.clear()
        elif self.op is None and self._spare:
            self.begin(self._spare.pop())

    def take(self) -> Optional[PrefetchOp]:
        """Give up the probe in flight (the caller cancels it and frees its pages); returns it."""
        op, self.op = self.op, None
        self._spare.clear()
        return op

    def advance(self, start_fetch: bool) -> None:
        """Lookup done: fetch one store call of pages into free host pages (only with `start_fetch`, after a
        step's launch). Fetch done: hand it to `finish`, or free its pages if it failed."""
        op = self.op
        if op is None or not op.check.done() or (op.fetch is None and not start_fetch):
            return
        if op.fetch is None:
            stored = op.check.result() if op.check.exception() is None else 0
            chunk = self._call_pages()
            free = self._host_free() if self._host_free is not None else chunk
            n = min(stored, chunk, self._room(), free) if stored >= self.threshold_pages else 0
            pages = self._alloc_host(n) if n > 0 else None
            if not pages:
                self.op = None
                return
            op.host_pages = pages
            self.metrics.prefetch["pages_requested"] += n
            op.fetch = self._read(op)
        if not op.fetch.done():
            return
        self.op = None
        if op.fetch.exception() is not None:
            self._free_host(op.host_pages)
            return
        self._finish(op)
