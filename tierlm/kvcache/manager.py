"""`KVCacheManager`: one owner for the device KV pages of requests and of the prefix cache.

It ties the page allocator, the request→token table and the radix cache together so that the scheduler
speaks in requests and pages and never frees or leaks a page by hand.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from tierlm.kvcache.allocator import PageAllocator
from tierlm.kvcache.metrics import TierMetrics
from tierlm.kvcache.radix import MatchResult, RadixCache, RadixNode
from tierlm.kvcache.req_table import ReqToTokenTable


class KVCacheManager:
    """Allocates pages (evicting cold prefixes on demand), matches and caches prefixes, releases requests."""

    def __init__(self, num_pages: int, page_size: int, max_reqs: int, max_len: int, enable_prefix_cache: bool,
                 device: torch.device) -> None:
        self.page_size = page_size
        self.allocator = PageAllocator(num_pages)
        self.req_table = ReqToTokenTable(max_reqs, max_len, device)
        self.radix: Optional[RadixCache] = RadixCache(page_size, self.allocator.free) if enable_prefix_cache else None
        self.metrics = TierMetrics()

    def pages_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.page_size)

    @property
    def capacity_pages(self) -> int:
        return self.allocator.capacity

    def reclaimable_pages(self) -> int:
        """Free pages plus unlocked cached ones (evictable)."""
        return self.allocator.num_free + (self.radix.evictable_pages if self.radix else 0)

    def available_pages(self) -> int:
        """Pages admission may count on now (here: every reclaimable page)."""
        return self.reclaimable_pages()

    def match_and_lock(self, tokens: Sequence[int]) -> Optional[MatchResult]:
        """Longest cached prefix of `tokens`, locked against eviction until `release`; None without a cache."""
        if self.radix is None:
            return None
        match = self.radix.match_prefix(tokens)
        self.radix.lock(match.node)
        return match

    def load_back(self, match: MatchResult) -> Optional[list[int]]:
        """Device pages of the whole matched prefix, loading host-only parts first (None: no room).
        Without lower tiers a match has no host part."""
        return list(match.pages)

    def note_admitted(self, request_id: str, match: Optional[MatchResult]) -> None:
        """Count an admitted request's cache hit per tier (call once per admission)."""
        if match is not None:
            self.metrics.record_hit("L1", len(match.pages) * self.page_size)

    # ---- lower-tier hooks (no-ops without tiers) ------------------------------------------------------------
    def start_loads(self, overlap_tokens: int = 0) -> Optional[list]:
        """Queue the copies `load_back` decided this step (beside a prefill of `overlap_tokens` new tokens);
        None here (no lower tier), else see the tiered manager."""
        return None

    def poll(self) -> None:
        """Advance background tier work (finished copies, prefetches); called once per schedule."""

    def prefetch_start(self, request_id: str, tokens: Sequence[int]) -> None:
        """A request arrived: start bringing its prefix up from L3 if that is worthwhile."""

    def prefetch_ready(self, request_id: str) -> bool:
        """Whether the request's prefetch (if any) allows admitting it now."""
        return True

    def prefetch_cancel(self, request_id: str) -> None:
        """The request left before admission: stop its prefetch."""

    def idle_wait(self, timeout: float) -> None:
        """Nothing to run: wait up to `timeout` for background tier work (instead of spinning)."""

    def tier_hits(self) -> dict:
        return self.metrics.tier_hits()

    def tier_stats(self) -> dict:
        return self.metrics.snapshot()

    def close(self) -> None:
        """Finish background work and release tier resources."""

    def unlock(self, node: Optional[RadixNode]) -> None:
        if node is not None and self.radix is not None:
            self.radix.unlock(node)

    def alloc(self, n: int) -> Optional[list[int]]:
        """`n` pages, evicting least-recently-used cached prefixes if needed; None if even that is not enough."""
        short = n - self.allocator.num_free
        if short > 0 and self.radix is not None:
            self.radix.evict(short)
        return self.allocator.alloc(n)

    def release(self, tokens: Sequence[int], pages: list[int], node: Optional[RadixNode], num_prefix_pages: int,
                cache: bool) -> None:
        """Give back a request's pages.

        `tokens` are the tokens whose KV is valid (in order), `pages` the request's pages (the first
        `num_prefix_pages` came from the cache via `node`). With `cache`, the whole pages of `tokens` go into
        the radix tree (pages the tree already had a copy of are freed); everything else is freed.
        """
        full = min(len(tokens) // self.page_size, len(pages))
        if cache and self.radix is not None and full > 0:
            present = self.radix.insert(tokens[:full * self.page_size], pages[:full]) // self.page_size
            self.allocator.free(pages[num_prefix_pages:present])
            self.allocator.free(pages[full:])
        else:
            self.allocator.free(pages[num_prefix_pages:])
        self.unlock(node)

    def used_pages(self) -> int:
        """Pages held by running requests or locked cache paths (not free, not evictable)."""
        return self.capacity_pages - self.reclaimable_pages()

    def check_no_leak(self, live_pages: Sequence[list[int]] = ()) -> None:
        """Assert every page is free, cached or owned by a live request, exactly once (for tests)."""
        owned: list[int] = [p for pages in live_pages for p in pages]
        cached = self.radix.all_pages() if self.radix else set()
        if self.radix:
            self.radix.check_invariants()
        free = {p for p in range(1, self.allocator.num_pages) if self.allocator.is_free(p)}
        live = set(owned) - cached
        assert not (free & (cached | live)), "a free page is also in use"
        assert len(free) + len(cached | live) == self.capacity_pages, (
            f"leak: {self.capacity_pages - len(free) - len(cached | live)} pages unaccounted")
