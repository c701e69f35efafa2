"""`TierIO`: the background workers of the cache tiers — D2H backups on one thread (with its own CUDA
stream, see `PageTransfer.backup`) and L3 store calls on another — so neither ever blocks decode.

The scheduler thread never waits on them except where correctness needs it (freeing pages a ticket still
reads, the write_back policy, shutdown). Workers only move bytes between pages they were handed; all tree
and allocator state is changed on the scheduler thread.
"""
from __future__ import annotations

import concurrent.futures as cf
import logging
from typing import Any, Callable, Optional, Sequence

from tierlm.kvcache.transfer import PageTransfer

logger = logging.getLogger(__name__)


def _done_future(fn: Callable, *args: Any) -> cf.Future:
    fut: cf.Future = cf.Future()
    try:
        fut.set_result(fn(*args))
    except Exception as e:  # noqa: BLE001 - delivered through the future like a thread's
        fut.set_exception(e)
    return fut


class Ticket:
    """One backup in flight: `copy` completes when the host copy is valid, `done` when the optional L3
    write of those host pages has finished too (until then the host pages must not be freed)."""

    __slots__ = ("copy", "done")

    def __init__(self, copy: cf.Future, done: cf.Future) -> None:
        self.copy, self.done = copy, done

    def failed(self) -> bool:
        return self.copy.done() and self.copy.exception() is not None


class TierIO:
    """Runs D2H backups and L3 store calls off the scheduler thread (`threads=False` runs them inline,
    deterministically, for tests)."""

    def __init__(self, transfer: PageTransfer, store: Any = None, threads: bool = True, l3_threads: int = 4) -> None:
        self.transfer = transfer
        self.store = store
        self._copy = cf.ThreadPoolExecutor(1, thread_name_prefix="tierlm-d2h") if threads else None
        # several L3 workers: one slow prefetch must not queue the others behind it
        self._l3 = cf.ThreadPoolExecutor(l3_threads, thread_name_prefix="tierlm-l3") if threads and store else None
        self._inflight: set[cf.Future] = set()

    def _track(self, fut: cf.Future) -> cf.Future:
        self._inflight.add(fut)
        fut.add_done_callback(self._inflight.discard)
        return fut

    def submit_store(self, fn: Callable, *args: Any) -> cf.Future:
        """Run an L3 call on the store thread."""
        return self._track(self._l3.submit(fn, *args) if self._l3 else _done_future(fn, *args))

    def backup(self, device_pages: list[int], host_pages: list[int], keys: Optional[Sequence[str]]) -> Ticket:
        """Copy device pages to host pages, then (with `keys`) write those host pages to the L3 store."""
        event = self.transfer.record()  # after the forwards that wrote these pages
        copy = (self._copy.submit(self.transfer.backup, device_pages, host_pages, event) if self._copy
                else _done_future(self.transfer.backup, device_pages, host_pages, event))
        self._track(copy)
        if not keys or self.store is None:
            return Ticket(copy, copy)
        done: cf.Future = cf.Future()
        self._track(done)

        def chain(f: cf.Future) -> None:
            if f.exception() is not None:
                logger.error("KV backup to host failed: %s", f.exception())
                done.set_result(False)
                return
            w = self.submit_store(self.store.batch_set, list(keys), list(host_pages))
            w.add_done_callback(lambda g: done.set_result(g.exception() is None))

        copy.add_done_callback(chain)
        return Ticket(copy, done)

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait for everything in flight; True when nothing is left."""
        if timeout is not None:
            cf.wait(list(self._inflight), timeout=timeout)
            return not self._inflight
        while self._inflight:  # a finished copy may start its L3 write: loop until quiet
            cf.wait(list(self._inflight))
        return True

    def wait_any(self, futures: Sequence[cf.Future]) -> None:
        """Wait until at least one of `futures` is done."""
        cf.wait(futures, return_when=cf.FIRST_COMPLETED)

    def idle(self) -> bool:
        return not self._inflight

    def close(self) -> None:
        self.wait()
        for ex in (self._copy, self._l3):
            if ex is not None:
                ex.shutdown(wait=True)
