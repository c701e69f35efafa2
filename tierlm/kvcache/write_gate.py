"""`WriteGate`: storage write policy `auto` stops writing an L3 store that only this engine reads while
what it writes is neither read back nor worth reading.

An L3 write runs off the serving path, but not for free: the store's disk or network is shared with the
reads, and the copies, queues and completions take host time from the scheduler's thread. Where this
engine recomputes a prefix faster than the store returns it (a fast prefill, a slow disk) every write
only costs time. The gate watches two things: how many pages the store served back (`served()`) and
whether the cost model finds its loads worth waiting for (`pays()`, from the measured prefill rate and the
store's measured read rate; False until a request's read of the store has been measured). A store that no
request reads is not worth writing however fast it would read, so the gate does not read it back on its
own to find out: such a calibration read kept writes going where the loads they enabled then cost more
than they saved (the host tier's own hits went to the fetched pages; `docs/benchmarks.md`).

- Open, it lets writes through in windows of `window` pages. A window ends and the gate closes when the
  store served back less than USE_SHARE of the pages written in it and its loads do not pay. A store
  whose loads pay is never closed: its hits come back later than one window when the working set is large.
  A store first read after the gate closed is measured by the prefetcher's probes of what it holds.
- Closed, it withholds writes (counted, the nodes stay unwritten and may be written later). It opens again
  once it has withheld `window * backoff` pages and the loads pay (reads measured on a store no longer
  written to are often faster), or at once when the store serves USE_SHARE of a window from what it
  already holds. Opening on a measurement alone doubles `backoff` (up to MAX_BACKOFF), so a store whose
  writes are never read back is tried less and less often; reads that come back reset it to 1.

A store that other engines read (`KVStore.shared`) has no gate: what one replica writes, another loads.
"""
from __future__ import annotations

from typing import Callable

USE_SHARE = 0.05  # pages served back per page written that keep a window's writes worth making
MAX_BACKOFF = 64


class WriteGate:
    """Whether `auto` writes to an unshared L3 store now (see the module doc). Single-threaded: the
    scheduler's thread asks it for every L3 write it decides."""

    def __init__(self, window: int, served: Callable[[], int], pays: Callable[[], bool]) -> None:
        self.window = max(1, window)
        self._served, self._pays = served, pays
        self.open = True
        self.backoff = 1
        self.closings = 0
        self.withheld_pages = 0  # total, for /stats and /metrics
        self._count = 0  # pages written (open) or withheld (closed) since the gate last turned
        self._served_at = served()

    def allow(self, pages: int) -> bool:
        """Whether a write of `pages` pages may go ahead now; counted either way."""
        self._turn()
        self._count += pages
        if not self.open:
            self.withheld_pages += pages
        return self.open

    def _turn(self) -> None:
        served = self._served() - self._served_at
        used = served >= USE_SHARE * (self._count if self.open else self.window)
        if self.open:
            if self._count < self.window:
                return
            if used:
                self.backoff = 1
            elif not self._pays():
                self.open, self.closings = False, self.closings + 1
            self._reset()
        elif used or (self._count >= self.window * self.backoff and self._pays()):
            self.open, self.backoff = True, 1 if used else min(MAX_BACKOFF, self.backoff * 2)
            self._reset()

    def _reset(self) -> None:
        self._count, self._served_at = 0, self._served()

    def snapshot(self) -> dict:
        return {"open": self.open, "closings": self.closings, "backoff": self.backoff,
                "withheld_pages": self.withheld_pages}
