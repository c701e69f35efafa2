"""`TierIO`: the copy executor of the cache tiers, which lives where the pools live (the worker).

It runs what a step plan asks for: host-to-device loads (queued layer by layer, see `PageTransfer`),
device-to-host backups on one thread (with its own CUDA stream) and L3 store calls on others, so neither
ever blocks decode. It only moves bytes between pages it was handed; every decision (which pages, when)
is the controller's (`KVCacheManager`), which learns of completions through `Ticket`s.
"""
from __future__ import annotations

import concurrent.futures as cf
import functools
import logging
import sys
import threading
from collections import deque
from typing import Any, Callable, Optional, Sequence

from tierlm.kvcache.futures import finished
from tierlm.kvcache.io_gate import ReadsFirst
from tierlm.kvcache.transfer import LayerLoads, PageTransfer

logger = logging.getLogger(__name__)
L3_QUEUE_BYTES = 2 << 30  # default bound of the bytes of L3 writes in flight
# The interpreter's thread switch interval while tier I/O threads exist (the default is 5 ms). Every call that
# releases the GIL (a read, a checksum, a copy's synchronisation) makes its thread wait to take the GIL back
# while the scheduler's thread runs Python, up to the switch interval: a page read and then checked waits
# twice, so at the default a store reads at a fraction of the disk's speed beside a busy scheduler
# (`benchmarks/bench_store_contention.py`), and the cost model then finds its loads not worth making.
IO_SWITCH_INTERVAL_S = 0.0005


class Ticket:
    """One backup, decided by the controller and completed by the executor: `copy` completes when the host
    copy is valid, `stored` when the optional L3 write of those host pages has finished too (until then the
    host pages must not be freed). Both exist from the moment the backup is decided; `issued` is set when its
    copy goes to the executor (with a step plan, or at once), and `seq` numbers it then: backups are issued,
    and executed, in the order of their numbers (-1: not yet issued, or not numbered by the controller)."""

    __slots__ = ("copy", "stored", "issued", "seq")

    def __init__(self) -> None:
        self.copy: cf.Future = cf.Future()
        self.stored: cf.Future = cf.Future()
        self.issued = False
        self.seq = -1

    def failed(self) -> bool:
        return self.copy.done() and self.copy.exception() is not None


def _forward(src: cf.Future, dst: cf.Future) -> None:
    if src.exception() is not None:
        dst.set_exception(src.exception())
    else:
        dst.set_result(src.result())


class TierIO:
    """Runs loads, D2H backups and L3 store calls for one (device pool, host pool) pair (`threads=False`
    runs backups and store calls inline, deterministically, for tests)."""

    def __init__(self, transfer: PageTransfer, store: Any = None, threads: bool = True, l3_threads: int = 4,
                 l3_queue_bytes: int = L3_QUEUE_BYTES, l3_write_threads: int = 2, l3_lookup_threads: int = 2) -> None:
        self.transfer = transfer
        self.store = store
        self._copy = cf.ThreadPoolExecutor(1, thread_name_prefix="tierlm-d2h") if threads else None
        if threads and sys.getswitchinterval() > IO_SWITCH_INTERVAL_S:  # process-wide; only ever lowered
            sys.setswitchinterval(IO_SWITCH_INTERVAL_S)
        # L3 lookups, L3 reads (prefetches) and L3 writes (backups, which no request waits for) on separate
        # workers: a lookup, which an arriving request may wait for, never queues behind reads or writes of
        # whole pages, and one slow prefetch does not queue the others behind it
        store_pool = threads and store is not None
        self._l3_lookup = (cf.ThreadPoolExecutor(l3_lookup_threads, thread_name_prefix="tierlm-l3q")
                           if store_pool else None)
        self._l3 = cf.ThreadPoolExecutor(l3_threads, thread_name_prefix="tierlm-l3") if store_pool else None
        self._l3_write = (cf.ThreadPoolExecutor(l3_write_threads, thread_name_prefix="tierlm-l3w") if store_pool
                          else None)
        self._inflight: set[cf.Future] = set()
        self.store_errors = 0  # L3 calls that raised (any KVStore, whatever it is built on)
        # L3 writes queued or running, bounded: a write that would exceed the bound is dropped (counted), so a
        # slow store never holds host pages (and through them the steps that need room) hostage
        self.l3_queue_bytes = l3_queue_bytes
        self._l3_pending = 0
        self.l3_dropped_pages = 0
        self.gate = ReadsFirst()  # a write starts once no read runs: reads are what requests wait for
        self._lock = threading.Lock()
        self._backups_done: Any = None  # the CUDA event after the last device-to-host copy queued
        # (number, event after its copy) of the controller's backups (`Ticket.seq`, given in the order they
        # are executed) whose copies are queued on the device and may not have finished yet
        self._copy_events: deque[tuple[int, Any]] = deque()
        self.last_seq = -1
        self.numbering_ok = True  # False once a number came out of order: fences then wait for every backup

    @property
    def ordered_copies(self) -> bool:
        """Backups and loads are queued on CUDA streams in step order: a page whose backup is queued may be
        reused by a later step that waits for the copy on the device (`backups_fence`)."""
        return self.transfer.ordered

    def backups_fence(self, upto: Optional[int] = None) -> Any:
        """The event after the device-to-host copies of the backups numbered up to `upto` (None: all) queued
        so far (None: none left to wait for, or copies are synchronous): a step whose forward writes pages
        freed while their backup was still copying, or loads host pages a backup is still writing, waits for
        it on the device. The backup stream runs copies in order, so waiting for the last of those suffices,
        and a step waits only for the backups of the pages it reuses, not for every backup issued before it."""
        if upto is None or not self.numbering_ok:
            return self._backups_done
        return next((event for seq, event in reversed(self._copy_events) if seq <= upto), None)

    def _keep_event(self, seq: int, done: Any) -> None:
        """Keep the copy event of the controller's backup `seq` (-1: not one of the controller's, a warm-up's:
        no fence names it); events of completed copies are let go."""
        if seq < 0:
            return
        if seq <= self.last_seq and self.numbering_ok:
            self.numbering_ok = False
            logger.error("KV backup %d reached the copy executor after backup %d; steps now wait for every "
                         "backup before reusing pages", seq, self.last_seq)
        self.last_seq = max(self.last_seq, seq)
        if done is None:
            return
        self._copy_events.append((seq, done))
        if len(self._copy_events) > 64:  # completion is in stream order: the oldest complete first
            while len(self._copy_events) > 1 and self._copy_events[0][1].query():
                self._copy_events.popleft()

    @property
    def backend(self) -> str:
        return self.transfer.backend

    def _track(self, fut: cf.Future) -> cf.Future:
        self._inflight.add(fut)
        fut.add_done_callback(self._inflight.discard)
        return fut

    def submit_store(self, fn: Callable, *args: Any) -> cf.Future:
        """Run an L3 read (a fetch or a probe) on a store thread, ahead of writes (`ReadsFirst`); a call that
        raises is counted (`store_errors`), logged once, and its future carries the exception (callers treat
        it as misses)."""
        return self._submit_l3(self._l3, fn, *args, kind="read")

    def submit_lookup(self, fn: Callable, *args: Any) -> cf.Future:
        """Run an L3 lookup (which pages are stored) on a worker of its own, counted like `submit_store`."""
        return self._submit_l3(self._l3_lookup, fn, *args)

    def _submit_l3(self, pool: Optional[cf.ThreadPoolExecutor], fn: Callable, *args: Any,
                   kind: str = "lookup") -> cf.Future:
        call = (self._counted, kind, fn, *args)
        return self._track(pool.submit(*call) if pool else finished(*call))

    def _counted(self, kind: str, fn: Callable, *args: Any) -> Any:
        """Run one store call of `kind` ("read" before writes, "write" after reads, "lookup"), counting errors."""
        try:
            if kind == "read":
                with self.gate.reading():
                    return fn(*args)
            if kind == "write":
                self.gate.before_write()
            return fn(*args)
        except Exception as e:
            with self._lock:
                self.store_errors += 1
                first = self.store_errors == 1
            (logger.error if first else logger.debug)(
                "L3 store %s failed: %s: %s (counted in the L3 stats as io_errors; later failures are not logged)",
                getattr(fn, "__name__", "call"), type(e).__name__, e)
            raise

    def load(self, host_pages: list[int], device_pages: list[int], overlap_tokens: int = 0,
             after: Any = None) -> Optional[LayerLoads]:
        """Queue host-to-device copies (see `PageTransfer.start_load`, also for `after`): None when already
        complete, else the per-layer handle the forward waits on."""
        if not host_pages:
            return None
        return self.transfer.start_load(host_pages, device_pages, overlap_tokens, after)

    def backup(self, device_pages: list[int], host_pages: list[int], keys: Optional[Sequence[str]],
               ticket: Ticket, after: Any = None) -> None:
        """Copy device pages to host pages, then (with `keys`) write those host pages to the L3 store;
        completes `ticket`. Without device pages only the L3 write runs (a host copy written back). The copy
        follows the work queued so far on the device, or only that before `after` (`PageTransfer.queue_backup`)."""
        done = None
        if not device_pages:
            copy = finished(lambda: None)
        else:
            done = self.transfer.queue_backup(device_pages, host_pages, after)
            if done is not None:
                self._backups_done, wait = done, done.synchronize
            else:
                wait = functools.partial(self.transfer.backup, device_pages, host_pages)
            copy = self._copy.submit(wait) if self._copy else finished(wait)
        self._keep_event(ticket.seq, done)
        self._track(ticket.stored)
        if not keys or self.store is None:
            copy.add_done_callback(lambda f: (_forward(f, ticket.copy), _forward(f, ticket.stored)))
            return

        nbytes = len(host_pages) * self.transfer.host.bytes_per_page

        def written(g: cf.Future) -> None:
            with self._lock:
                self._l3_pending -= nbytes
            ticket.stored.set_result(g.exception() is None)

        def chain(f: cf.Future) -> None:
            _forward(f, ticket.copy)
            if f.exception() is not None:
                logger.error("KV backup to host failed: %s", f.exception())
                ticket.stored.set_result(False)
                return
            with self._lock:
                drop = self._l3_pending + nbytes > self.l3_queue_bytes and self._l3_pending > 0
                if drop:
                    self.l3_dropped_pages += len(host_pages)
                else:
                    self._l3_pending += nbytes
            if drop:  # the host copy stands; only the L3 copy is skipped
                ticket.stored.set_result(False)
                return
            self._submit_l3(self._l3_write, self.store.batch_set, list(keys), list(host_pages), kind="write"
                            ).add_done_callback(written)

        copy.add_done_callback(chain)

    def finished_loads(self) -> list[tuple[int, float]]:
        return self.transfer.finished_loads()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait for every backup and store call in flight; True when nothing is left. With a timeout (the
        scheduler idling until something can run), only until the first of them completes: a long L3 write
        must not hold up a request that a finished copy or fetch has made admissible."""
        if timeout is not None:
            if self._inflight:
                cf.wait(list(self._inflight), timeout=timeout, return_when=cf.FIRST_COMPLETED)
            return not self._inflight
        with self.gate.flushing():
            while self._inflight:  # a finished copy may start its L3 write: loop until quiet
                cf.wait(list(self._inflight))
        return True

    def wait_any(self, futures: Sequence[cf.Future]) -> None:
        """Wait until at least one of `futures` is done."""
        cf.wait(futures, return_when=cf.FIRST_COMPLETED)

    def idle(self) -> bool:
        return not self._inflight

    def close(self) -> None:
        self.transfer.wait_loads()
        self.wait()
        for ex in (self._copy, self._l3_lookup, self._l3, self._l3_write):
            if ex is not None:
                ex.shutdown(wait=True)
