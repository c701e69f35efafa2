"""`ReadsFirst`: L3 reads go before L3 writes on the store's one shared bandwidth (a disk, a network link).

A read is what an arriving request may wait for (a prefetch, a probe that measures the store for the cost
model); a write is a backup that no request waits for. When both run at once a disk splits its bandwidth
between them, so a store busy with write-through measures slow to the cost model and its hits get
recomputed. So a write starts only while no read runs, or once it has waited `max_wait` seconds (writes
are never starved; the bounded write queue in `TierIO` drops what cannot wait). Reads never wait.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Iterator


class ReadsFirst:
    """Counts the reads in flight; `before_write()` blocks a writer until there are none (at most `max_wait`
    seconds). `write_wait_s` is the writers' total wait (for the L3 stats)."""

    def __init__(self, max_wait: float = 0.5) -> None:
        self.max_wait = max_wait
        self._cv = threading.Condition()
        self._reads = 0
        self._flushing = 0  # while a flush waits for every write, writes do not wait for reads
        self.write_wait_s = 0.0

    @contextmanager
    def reading(self) -> Iterator[None]:
        with self._cv:
            self._reads += 1
        try:
            yield
        finally:
            with self._cv:
                self._reads -= 1
                if not self._reads:
                    self._cv.notify_all()

    @contextmanager
    def flushing(self) -> Iterator[None]:
        """Within: writes go at once (a shutdown waiting for its backups must not also wait for reads)."""
        with self._cv:
            self._flushing += 1
            self._cv.notify_all()
        try:
            yield
        finally:
            with self._cv:
                self._flushing -= 1

    def before_write(self) -> None:
        t0 = time.perf_counter()
        with self._cv:
            if self._reads and not self._flushing:
                self._cv.wait_for(lambda: not self._reads or self._flushing, timeout=self.max_wait)
                self.write_wait_s += time.perf_counter() - t0
