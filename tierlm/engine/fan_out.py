"""The controller's view of every tensor-parallel rank's KV tier work: `FanOutStore` (each L3 call on every
rank's shard, a page counted only where all ranks have it) and `FanOutIO` (each copy on every rank, its ticket
done when all ranks' are), joined by `join_futures`. A fetch that fails or stalls on one rank is recomputed on
all of them, so no rank ever mixes cached and recomputed KV.
"""
from __future__ import annotations

import concurrent.futures as cf
import logging
import threading
from typing import Any, Callable, Optional, Sequence

from tierlm.engine.rank_link import RankLink
from tierlm.kvcache.stores.base import KVStore
from tierlm.kvcache.tier_io import Ticket

logger = logging.getLogger(__name__)


def join_futures(dst: cf.Future, parts: Sequence[cf.Future], combine: Callable[[list], Any]) -> None:
    """Complete `dst` once every part is done: with the first error, or `combine(results)`."""
    left = [len(parts)]
    lock = threading.Lock()

    def one(_: cf.Future) -> None:
        with lock:
            left[0] -= 1
            if left[0]:
                return
        errors = [f.exception() for f in parts if f.exception() is not None]
        if dst.done():
            return
        if errors:
            dst.set_exception(errors[0])
        else:
            dst.set_result(combine([f.result() for f in parts]))

    for f in parts:
        f.add_done_callback(one)


def _all_stored(results: list) -> Any:
    return results[0] if all(r == results[0] for r in results) else False


class FanOutStore(KVStore):
    """The L3 store as the controller sees it: every call goes to every rank's shard, and a page counts only
    where all ranks agree (fewest leading pages, logical AND per page). A rank whose call fails counts as a
    miss for the whole call (`rank_errors`)."""

    def __init__(self, local: KVStore, links: Sequence[RankLink]) -> None:
        self.local, self.links = local, list(links)
        self.rank_errors = 0
        self._lock = threading.Lock()

    def _remote(self, name: str, *args: Any) -> list[Any]:
        futures = [link.call("store", name, list(args)) for link in self.links]
        out = []
        for f in futures:
            try:
                out.append(f.result())
            except Exception as e:  # noqa: BLE001 - a rank's failure is a miss, never a mix
                with self._lock:
                    self.rank_errors += 1
                logger.debug("L3 %s on a worker rank failed: %s", name, e)
                out.append(None)
        return out

    def attach(self, host_pool: Any) -> None:
        self.host = host_pool

    def batch_exists(self, keys: Sequence[str]) -> int:
        remote = self._remote("batch_exists", list(keys))
        return min([self.local.batch_exists(keys)] + [0 if r is None else int(r) for r in remote])

    def batch_get(self, keys: Sequence[str], host_pages: Sequence[int]) -> list[bool]:
        futures = [link.call("store", "batch_get", [list(keys), list(host_pages)]) for link in self.links]
        local_error: Optional[Exception] = None
        try:
            ok = list(self.local.batch_get(keys, host_pages))
        except Exception as e:  # noqa: BLE001 - raised only after every rank has finished writing
            local_error, ok = e, [False] * len(keys)
        for f in futures:  # every rank is waited for: host pages are reused only once nobody writes them
            try:
                got = f.result()
            except Exception:  # noqa: BLE001
                with self._lock:
                    self.rank_errors += 1
                got = None
            ok = [a and bool(b) for a, b in zip(ok, got)] if got is not None else [False] * len(ok)
        if local_error is not None:
            raise local_error
        return ok

    def batch_set(self, keys: Sequence[str], host_pages: Sequence[int]) -> list[bool]:
        remote = self._remote("batch_set", list(keys), list(host_pages))
        ok = list(self.local.batch_set(keys, host_pages))
        for got in remote:
            ok = [a and bool(b) for a, b in zip(ok, got)] if got is not None else [False] * len(ok)
        return ok

    def delete(self, keys: Sequence[str]) -> None:
        self._remote("delete", list(keys))
        self.local.delete(keys)

    def clear(self) -> None:
        self._remote("clear")
        self.local.clear()

    def stats(self) -> dict:
        return {**self.local.stats(), "rank_errors": self.rank_errors}

    def close(self) -> None:
        self.local.close()


class FanOutIO:
    """The copy executor as the controller sees it (the `TierIO` interface `KVCacheManager` uses): copies
    run on every rank, their tickets complete when all ranks' have."""

    def __init__(self, local: Any, links: Sequence[RankLink], store: Optional[FanOutStore]) -> None:
        self.local, self.links, self.store = local, list(links), store
        self.transfer = local.transfer

    @property
    def backend(self) -> str:
        return self.local.backend

    @property
    def ordered_copies(self) -> bool:
        return self.local.ordered_copies

    @property
    def store_errors(self) -> int:
        return self.local.store_errors + (self.store.rank_errors if self.store is not None else 0)

    @property
    def l3_dropped_pages(self) -> int:
        return self.local.l3_dropped_pages

    @property
    def l3_queue_bytes(self) -> int:
        return self.local.l3_queue_bytes

    @property
    def gate(self) -> Any:
        return self.local.gate

    def fan_ticket(self, ticket: Ticket) -> tuple[Ticket, list[tuple[int, int]]]:
        """A local ticket and per-rank reply ids whose completions together complete `ticket`."""
        local = Ticket()
        local.seq = ticket.seq
        ids, copies, stores = [], [local.copy], [local.stored]
        for link in self.links:
            (cid, cf_), (sid, sf_) = link.expect(), link.expect()
            ids.append((cid, sid))
            copies.append(cf_)
            stores.append(sf_)
        join_futures(ticket.copy, copies, lambda _: None)
        join_futures(ticket.stored, stores, _all_stored)
        return local, ids

    def backup(self, device_pages: list[int], host_pages: list[int], keys: Optional[Sequence[str]],
               ticket: Ticket) -> None:
        local, ids = self.fan_ticket(ticket)
        for link, rid in zip(self.links, ids):
            link.post("backup", device_pages, host_pages, None if keys is None else list(keys), list(rid),
                      ticket.seq)
        self.local.backup(device_pages, host_pages, keys, local)

    def load(self, host_pages: list[int], device_pages: list[int], overlap_tokens: int = 0) -> Any:
        if host_pages:
            for link in self.links:
                link.post("load", host_pages, device_pages)
        return self.local.load(host_pages, device_pages, overlap_tokens)

    def submit_store(self, fn: Callable, *args: Any) -> cf.Future:
        return self.local.submit_store(fn, *args)

    def submit_lookup(self, fn: Callable, *args: Any) -> cf.Future:
        return self.local.submit_lookup(fn, *args)

    def finished_loads(self) -> list[tuple[int, float]]:
        return self.local.finished_loads()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """With a timeout (the scheduler idling while prefetches run) only this rank's work is waited on:
        other ranks report their completions through tickets and store replies anyway. Without one (a
        flush) every rank waits until its copies and store calls are done."""
        if timeout is not None:
            return self.local.wait(timeout)
        futures = [link.call("wait") for link in self.links]
        self.local.wait()
        cf.wait(futures)
        return True

    def wait_any(self, futures: Sequence[cf.Future]) -> None:
        cf.wait(futures, return_when=cf.FIRST_COMPLETED)

    def idle(self) -> bool:
        return self.local.idle()

    def close(self) -> None:
        self.local.close()
