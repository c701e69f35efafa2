"""`KVCacheManager`: the controller of the KV cache — every decision about pages in every tier.

The scheduler speaks to it in requests: `admit` (match a prefix, reserve room, take a table row),
`grow` (pages for more tokens) and `release` (into the prefix cache, or freed). Behind that sit the device
page allocator, the radix tree, eviction (`Evictor`), and with lower tiers the host page allocator, the
host tier's eviction order (`HostRetention`), the write policies (`Backups`) and L3 prefetch. It decides
copies but never runs them: loads and backups are collected per step (`CopyQueue`) for the step plan and
executed where the pools live (`TierIO`).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

from tierlm.kvcache.accounting import check_no_leak, count_hits, tier_stats
from tierlm.kvcache.allocator import PageAllocator
from tierlm.kvcache.assembly import assemble
from tierlm.kvcache import drain
from tierlm.kvcache.contracts import Admitted, StepCopies, TierSetup, Verdict
from tierlm.kvcache.events import GPU, KVEventSink, RadixEvents
from tierlm.kvcache.exit_flush import flush_at_exit
from tierlm.kvcache.keys import PageHasher, page_keys
from tierlm.kvcache.metrics import TierMetrics
from tierlm.kvcache.radix import MatchResult, RadixCache, RadixNode


class KVCacheManager:
    """Pages, prefixes and tiers of one engine (see the module doc); single-threaded (the scheduler's).

    With an `events` sink every change of what the radix tree holds, per tier, is reported to it
    (`tierlm.kvcache.events`); pages are then named by `hasher`'s keys (the L3 store's, when there is one).
    """

    def __init__(self, num_pages: int, page_size: int, max_reqs: int, enable_prefix_cache: bool = True,
                 tiers: Optional[TierSetup] = None, events: Optional[KVEventSink] = None,
                 hasher: Optional[PageHasher] = None) -> None:
        if tiers is not None and not enable_prefix_cache:
            raise ValueError("--enable-hicache: the KV tiers extend the prefix cache")
        self.page_size = page_size
        self.allocator = PageAllocator(num_pages, reserved=1)
        self.events = RadixEvents(events)
        self.radix = RadixCache(page_size, self.events) if enable_prefix_cache else None
        self.metrics = TierMetrics()
        self._rows = list(range(max_reqs - 1, -1, -1))
        self.tiers = tiers
        self.io = tiers.io if tiers else None
        self.store = tiers.store if tiers else None
        self.hasher = (tiers.hasher if tiers else None) or hasher
        if self.store is not None and self.hasher is None:
            raise ValueError("an L3 store needs a PageHasher for its keys")
        if events is not None and self.hasher is None:
            raise ValueError("KV events name pages by their keys: they need a PageHasher")
        self.host_allocator = PageAllocator(tiers.host_pages) if tiers else None
        assemble(self, tiers, num_pages)  # cost, copies, backups, retention, evictor, prefetcher
        self._step_tokens = 0  # tokens to compute for the requests admitted since the last plan (cost model)
        self._row_keys: dict[int, tuple[int, list[str]]] = {}  # per table row: its request's arrival keys
        self._closed = False
        if tiers is not None:
            flush_at_exit(self)
        self.events.cleared()  # the cache starts empty: listeners drop what an earlier engine told them

    # ---- sizing --------------------------------------------------------------------------------------------
    def pages_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.page_size)

    @property
    def capacity_pages(self) -> int:
        return self.allocator.capacity

    def fits_ever(self, num_tokens: int) -> bool:
        """Whether `num_tokens` of KV fit an empty pool."""
        return self.pages_for(num_tokens) <= self.capacity_pages

    # ---- admission, growth, release ------------------------------------------------------------------------
    def admit(self, request_id: str, tokens: Sequence[int], target_tokens: int, max_tokens: int,
              reserved_pages: int, ready: bool = True) -> Union[Admitted, Verdict]:
        """Admit a request whose cacheable prefix is `tokens` if KV for `target_tokens` fits next to the
        `reserved_pages` other requests still count on (NEVER when `max_tokens` could not fit an empty pool;
        PREFETCHING while its L3 prefetch runs or the caller says it is not `ready`). The prefix's host-only
        part is loaded back with the next step plan, as much of it as the cost model finds worth loading
        (the rest is recomputed)."""
        if not self.fits_ever(max_tokens):
            return Verdict.NEVER
        if not self._rows:
            return Verdict.WAIT
        if not ready or (self.prefetcher is not None and not self.prefetcher.ready(request_id)):
            return Verdict.PREFETCHING
        match = self.radix.match_prefix(tokens) if self.radix else None
        unloaded = 0  # host pages of the match left to recompute
        if match is not None and match.host_nodes and self.cost is not None:
            hit = match.num_host_pages
            keep = self.cost.load_pages(hit, len(tokens) + 1 - (len(match.pages) + hit) * self.page_size,
                                        self._step_tokens, len(self.copies.pending.load_host))
            if keep < hit:
                match, unloaded = self.radix.truncate_match(match, keep), hit - keep
        if match is None:
            cached, to_load = [], 0
        else:
            self.radix.lock(match.node)
            if self.backups:
                self.backups.on_match(match)
            cached, to_load = match.pages, match.num_host_pages
        need = self.pages_for(target_tokens) - len(cached) - to_load
        if need + to_load + reserved_pages > self._room_for(need + to_load + reserved_pages):
            if self.backups and need + to_load + reserved_pages <= self.reclaimable_pages():
                self.metrics.backups["admission_waits"] += 1
            self._unlock(match.node if match else None)
            return Verdict.WAIT
        pages = list(cached)
        if to_load:
            dev = self.alloc(to_load)  # the matched path is locked: eviction cannot touch it
            if dev is None:  # the room check makes this unreachable; recover by waiting
                self._unlock(match.node)
                return Verdict.WAIT
            self._queue_load(match, dev)
            pages += dev
        from_l3, row = count_hits(self, request_id, match, unloaded), self._rows.pop()
        if self.prefetcher is not None and request_id in self.prefetcher.arrival_keys:
            self._row_keys[row] = self.prefetcher.arrival_keys.pop(request_id)
        if self.retention is not None:
            self.retention.observe(tokens)
            self.retention.fetched(row, match.host_nodes if match else [], from_l3 // self.page_size)
        self._step_tokens += len(tokens) + 1 - len(pages) * self.page_size
        return Admitted(row, pages, match.node if match else None, len(pages))

    def grow(self, pages: list[int], num_tokens: int) -> bool:
        """Extend `pages` (in place) to hold `num_tokens`; False (nothing taken) when the pool is exhausted."""
        missing = self.pages_for(num_tokens) - len(pages)
        if missing > 0:
            new = self.alloc(missing)
            if new is None:
                return False
            pages.extend(new)
        return True

    def release(self, row: Optional[int], tokens: Sequence[int], pages: list[int], node: Optional[RadixNode],
                num_prefix_pages: int, cache: bool) -> None:
        """Give back a request's row and pages. `tokens` have valid KV (in order); the first
        `num_prefix_pages` pages came from the cache via `node`. With `cache`, the whole pages of `tokens` go
        into the radix tree (pages it already had are freed); everything else is freed."""
        ps = self.page_size
        full = min(len(tokens) // ps, len(pages))
        known = self._row_keys.pop(row, None)  # pages hashed at arrival (L3 lookup) are not hashed again
        if cache and self.radix is not None and full > 0:
            keys = page_keys(self.hasher, tokens[:full * ps], known) if self.hasher is not None else None
            _, dups, leaf = self.radix.insert_pages(tokens[:full * ps], pages[:full], keys)
            self.allocator.free(dups)
            self.allocator.free(pages[full:])
            if self.backups:
                self.backups.on_insert(leaf)
        else:
            self.allocator.free(pages[num_prefix_pages:])
        self._unlock(node)
        if row is not None:
            if self.retention is not None:
                self.retention.released(row)
            if row in self._rows:
                raise RuntimeError(f"bad free of request row {row}")
            self._rows.append(row)

    def alloc(self, n: int) -> Optional[list[int]]:
        """`n` device pages, evicting least-recently-used cached prefixes if needed; None if that is not enough."""
        short = n - self.allocator.num_free
        if short > 0 and self.evictor is not None:
            self.evictor.evict_device(short)
        return self.allocator.alloc(n)

    def evict(self, num_pages: int) -> int:
        """Evict at least `num_pages` unlocked device pages (LRU); returns pages freed."""
        return self.evictor.evict_device(num_pages) if self.evictor else 0

    def evict_host(self, num_pages: int) -> int:
        return self.evictor.evict_host(num_pages) if self.evictor and self.tiers else 0

    def _unlock(self, node: Optional[RadixNode]) -> None:
        if node is not None and self.radix is not None:
            self.radix.unlock(node)

    # ---- lower tiers: host pages, copies, prefetch ----------------------------------------------------------
    def _alloc_host(self, n: int) -> Optional[list[int]]:
        short = n - self.host_allocator.num_free
        if short > 0:
            self.evictor.evict_host(short)
        return self.host_allocator.alloc(n)

    def _free_host(self, pages: list[int]) -> None:
        self.host_allocator.free(pages)

    def _queue_load(self, match: MatchResult, dev: list[int]) -> None:
        """Give the match's host-only nodes device pages again; the copy goes with this step's plan."""
        self.copies.queue_load(match.host_nodes, dev)
        i = 0
        for node in match.host_nodes:  # all locked (on the path to match.node)
            node.pages = dev[i:i + node.size]
            i += node.size
            self.radix.protected_pages += node.size
            self.events.stored(node, GPU)

    def take_copies(self) -> StepCopies:
        """The loads and backups decided since the last call (they ride in the next step plan)."""
        self._step_tokens = 0
        return self.copies.take()

    def poll(self, prefill_backlog: int = 0) -> None:
        """Advance background tier work (finished loads, prefetches); called once per schedule, with the
        prefill tokens then waiting or under way (for the cost model)."""
        if self.cost is not None:
            self.cost.observe_backlog(prefill_backlog)
        if self.io is not None:
            for nbytes, secs in self.io.finished_loads():
                self.metrics.record_load(nbytes, secs)
                self.cost.observe_load("L2", nbytes, secs)
            if self.backups is not None:
                self.backups.settle_writes()
        if self.prefetcher is not None:
            self.prefetcher.poll()

    def observe_prefill(self, tokens: int, seconds: float) -> None:
        """A prefill step without loads computed `tokens` tokens in `seconds` (the cost model's compute rate)."""
        if self.cost is not None:
            self.cost.observe_prefill(tokens, seconds)

    def prefetch_start(self, request_id: str, tokens: Sequence[int],
                       ahead_tokens: Union[int, Callable[[], int]] = 0) -> int:
        """A request arrived behind `ahead_tokens` of other requests' prefill (or a function counting them, asked
        only where there is an L3 to prefetch from): start bringing its prefix up from L3 if that is worthwhile.
        Returns the prefill tokens it is expected to bring (all of them without L3)."""
        if self.prefetcher is not None:
            ahead = ahead_tokens() if callable(ahead_tokens) else ahead_tokens
            return self.prefetcher.start(request_id, list(tokens), ahead)
        return len(tokens) + 1

    def after_launch(self) -> None:
        """A step was launched: start the tier work held back until then (`L3Prefetcher.after_launch`)."""
        if self.prefetcher is not None:
            self.prefetcher.after_launch()

    def prefetch_cancel(self, request_id: str) -> None:
        """The request left before admission: stop its prefetch."""
        if self.prefetcher is not None:
            self.prefetcher.cancel(request_id)

    def idle_wait(self, timeout: float) -> None:
        """Nothing to run: start the tier work held back from launches (nothing competes with it now), then
        wait up to `timeout` for background tier work (instead of spinning)."""
        self.after_launch()
        if self.io is not None and not self.io.idle():
            self.io.wait(timeout)

    # ---- whole-cache operations (tierlm.kvcache.drain) ------------------------------------------------------
    def flush(self) -> None:
        """Run every queued copy and wait until every load, backup (and L3 write) has finished."""
        drain.flush(self)

    def drop_device_cache(self) -> int:
        """Evict every unlocked device copy (host-backed prefixes stay matchable); returns pages freed."""
        return drain.drop_device_cache(self)

    def drop_host_cache(self) -> int:
        """Evict every unlocked host copy (writing first what storage write_back owes L3); returns pages freed."""
        return drain.drop_host_cache(self)

    def close(self) -> None:
        """Finish background work (backups, L3 writes) and release tier resources; listeners are told that
        this engine holds nothing any more. Idempotent; also runs at interpreter exit for a manager nobody
        closed (`flush_at_exit`), so decided backups reach L3."""
        if self._closed:
            return
        self._closed = True
        drain.shutdown(self)
        self.events.cleared()

    # ---- introspection -------------------------------------------------------------------------------------
    def reclaimable_pages(self) -> int:
        """Free pages plus unlocked cached ones (evictable)."""
        return self.allocator.num_free + (self.radix.evictable_pages if self.radix else 0)

    def _room_for(self, want: int) -> int:
        """`available_pages()`, after issuing the decided backups when only they keep `want` pages from
        counting and an issued copy's pages may be reused at once (stream-ordered copies; the next plan
        fences): a request then never waits a step for backups decided in its own schedule."""
        room = self.available_pages()
        if (room < want <= self.reclaimable_pages() and self.backups and self.backups.reuse_copying
                and self.backups.queue):
            self.copies.run_backups()
            self.metrics.backups["issued_for_admission"] += 1
            room = self.available_pages()
        return room

    def available_pages(self) -> int:
        """Pages admission may count on now: free pages plus cached pages evictable without waiting (pages
        whose backup is still copying, or that sit above such pages, do not count, so admission defers a
        request for a step instead of blocking the scheduler while the device runs out of queued work)."""
        behind = self.backups.pages_behind_io() if self.backups else 0
        return self.reclaimable_pages() - behind

    def used_pages(self) -> int:
        """Pages held by running requests or locked cache paths (not free, not evictable)."""
        return self.capacity_pages - self.reclaimable_pages()

    def tier_hits(self) -> dict:
        return self.metrics.tier_hits()

    def tier_stats(self) -> dict:
        return tier_stats(self)

    def check_no_leak(self, live_pages: Sequence[list[int]] = ()) -> None:
        """Assert every page is free, cached or owned by a live request, exactly once (for tests)."""
        check_no_leak(self, live_pages)
