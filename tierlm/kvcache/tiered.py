"""`TieredKVCacheManager`: the KV cache manager with L2 (host) and optional L3 (store) tiers.

It keeps the scheduler's view of `KVCacheManager` (pages, matches, release) and adds: write policies that
back device pages up to host (and on to L3) in the background, load-back of host-only prefixes before a
request's forward, and L3 prefetch at admission. All decisions happen here, on the scheduler thread;
`TierIO` workers only copy bytes.
"""
from __future__ import annotations

import time
from typing import Optional, Sequence

from tierlm.kvcache.hiradix import HiRadixCache, copy_pending, host_valid
from tierlm.kvcache.host_pool import HostKVPool
from tierlm.kvcache.keys import PageHasher
from tierlm.kvcache.manager import KVCacheManager
from tierlm.kvcache.pool import KVPool
from tierlm.kvcache.prefetch import L3Prefetcher
from tierlm.kvcache.radix import MatchResult, RadixNode
from tierlm.kvcache.stores.base import KVStore
from tierlm.kvcache.tier_io import TierIO
from tierlm.kvcache.transfer import PageTransfer

WRITE_POLICIES = ("write_through", "write_through_selective", "write_back")


class TieredKVCacheManager(KVCacheManager):
    """Device pages (L1) backed by a host pool (L2) and, with `store`, an L3 `KVStore`.

    Policies: `write_through` backs a node up when it is inserted or hit without a host copy;
    `write_through_selective` once it has been hit `write_threshold` times; `write_back` when the device
    evicts it. Device eviction of a node with a valid host copy only drops the device copy.
    """

    def __init__(self, page_size: int, max_reqs: int, max_len: int, device_pool: KVPool, host_pages: int,
                 write_policy: str = "write_through", write_threshold: int = 2, store: Optional[KVStore] = None,
                 hasher: Optional[PageHasher] = None, prefetch_policy: str = "timeout",
                 prefetch_timeout: float = 1.0, prefetch_threshold: int = 64, io_backend: str = "auto",
                 threads: bool = True) -> None:
        if write_policy not in WRITE_POLICIES:
            raise ValueError(f"--hicache-write-policy: unknown policy {write_policy!r}")
        if store is not None and hasher is None:
            raise ValueError("an L3 store needs a PageHasher for its keys")
        super().__init__(device_pool.num_pages, page_size, max_reqs, max_len, True, device_pool.device)
        self.host = HostKVPool(host_pages, device_pool)
        self.transfer = PageTransfer(device_pool, self.host, io_backend)
        self.store, self.hasher = store, hasher
        if store is not None:
            store.attach(self.host)
        self.io = TierIO(self.transfer, store, threads)
        self.write_policy = write_policy
        self.write_threshold = 1 if write_policy == "write_through" else write_threshold
        self.radix: HiRadixCache = HiRadixCache(
            page_size, self.allocator.free, self.host.allocator.free, self._wait_for_io,
            write_back=self._backup_now if write_policy == "write_back" else None)
        self.prefetcher = (L3Prefetcher(store, self.io.submit_store, hasher, self._alloc_host,
                                        self.host.allocator.free, self.radix, self.metrics, prefetch_policy,
                                        prefetch_timeout, prefetch_threshold, max_pages=host_pages // 2)
                           if store is not None else None)
        self._loads: tuple[list[int], list[int]] = ([], [])  # (host, device) pages admitted, not yet queued
        self._copying: set[RadixNode] = set()  # nodes with a D2H backup that may still be running

    def _wait_for_io(self, futures: list) -> None:
        """Device eviction found only pages still being copied: wait for the first copy (counted)."""
        t0 = time.perf_counter()
        self.io.wait_any(futures)
        self.metrics.backups["eviction_waits"] += 1
        self.metrics.backups["eviction_wait_s"] += time.perf_counter() - t0

    # ---- host pages and backups ------------------------------------------------------------------------------
    def _alloc_host(self, n: int) -> Optional[list[int]]:
        short = n - self.host.allocator.num_free
        if short > 0:
            self.radix.evict_host(short)
        return self.host.allocator.alloc(n)

    def _backup(self, node: RadixNode) -> bool:
        """Start copying a device-only node to host (and L3); False when there is no host room."""
        if node.pages is None or node.host_pages is not None or not node.pages:
            return False
        host = self._alloc_host(len(node.pages))
        if host is None:
            self.metrics.backups["skipped_no_host_room"] += 1
            return False
        keys = node.page_hashes if self.store is not None and not node.in_store else None
        node.io.append(self.io.backup(list(node.pages), host, keys))
        self._copying.add(node)
        node.host_pages = host
        node.in_store = node.in_store or bool(keys)
        self.metrics.backups["pages"] += len(host)
        self.metrics.backups["bytes"] += len(host) * self.host.bytes_per_page
        return True

    def _backup_now(self, node: RadixNode) -> bool:
        """write_back: back the node up and wait for the host copy (eviction needs it before freeing)."""
        if self._backup(node):
            node.io[-1].copy.exception()  # waits; a failure leaves the copy invalid
        return host_valid(node)

    # ---- the scheduler's view --------------------------------------------------------------------------------
    def available_pages(self) -> int:
        """Free pages plus cached pages evictable without waiting: pages whose backup is still copying
        (or that sit above such pages) do not count, so admission defers a request for a step instead of
        blocking the scheduler while the device runs out of queued work."""
        return self.reclaimable_pages() - self._pages_behind_io()

    def _pages_behind_io(self) -> int:
        """Unlocked device pages of nodes whose backup is still copying, and of their ancestors (a parent
        goes only after its children). Walks up from the nodes being copied, not over the whole tree."""
        self._copying = {n for n in self._copying if copy_pending(n)}
        seen: set[int] = set()
        total = 0
        for node in self._copying:
            while node is not None and node is not self.radix.root and id(node) not in seen:
                seen.add(id(node))
                if node.pages is not None and not node.lock_ref:
                    total += node.num_pages
                node = node.parent
        return total

    def match_and_lock(self, tokens: Sequence[int]) -> Optional[MatchResult]:
        match = self.radix.match_prefix(tokens)
        self.radix.lock(match.node)
        if self.write_policy != "write_back":
            node = match.node
            while node is not self.radix.root:
                if node.hit_count >= self.write_threshold and node.host_pages is None:
                    self._backup(node)
                node = node.parent
        return match

    def load_back(self, match: MatchResult) -> Optional[list[int]]:
        """Give the match's host-only nodes device pages again; the copy itself is queued by `start_loads`
        (once per step, for every request admitted in it) before the forward that reads the pages."""
        n = match.num_host_pages
        if n == 0:
            return list(match.pages)
        dev = self.alloc(n)  # the matched path is locked: eviction cannot touch it
        if dev is None:
            return None
        self._loads[0].extend(p for node in match.host_nodes for p in node.host_pages)
        self._loads[1].extend(dev)
        i = 0
        for node in match.host_nodes:  # all locked (on the path to match.node)
            node.pages = dev[i:i + node.size]
            i += node.size
            self.radix.protected_pages += node.size
        return list(match.pages) + dev

    def note_admitted(self, request_id: str, match: Optional[MatchResult]) -> None:
        if match is None:
            return
        ps = self.page_size
        loaded = match.num_host_pages * ps
        fetched = self.prefetcher.fetched_tokens.pop(request_id, 0) if self.prefetcher else 0
        l3 = min(fetched, loaded)
        per_token = self.host.bytes_per_page // ps
        self.metrics.record_hit("L1", len(match.pages) * ps)
        self.metrics.record_hit("L2", loaded - l3, (loaded - l3) * per_token)
        self.metrics.record_hit("L3", l3, l3 * per_token)

    def start_loads(self, overlap_tokens: int = 0) -> Optional[list]:
        """Queue the host-to-device copies of this step's admissions as one batch, layer-major, beside a
        prefill of `overlap_tokens` new tokens; returns what `PageTransfer.start_load` returns (None:
        nothing pending, or already copied)."""
        host, dev = self._loads
        if not host:
            return None
        self._loads = ([], [])
        return self.transfer.start_load(host, dev, overlap_tokens)

    def release(self, tokens: Sequence[int], pages: list[int], node: Optional[RadixNode], num_prefix_pages: int,
                cache: bool) -> None:
        ps = self.page_size
        full = min(len(tokens) // ps, len(pages))
        if cache and full > 0:
            hashes = self.hasher.chain(tokens[:full * ps]) if self.store is not None else None
            _, dups, leaf = self.radix.insert_pages(tokens[:full * ps], pages[:full], hashes)
            self.allocator.free(dups)
            self.allocator.free(pages[full:])
            if leaf is not None and self.write_policy == "write_through":
                self._backup(leaf)
        else:
            self.allocator.free(pages[num_prefix_pages:])
        self.unlock(node)

    # ---- background work and prefetch -----------------------------------------------------------------------
    def poll(self) -> None:
        for nbytes, secs in self.transfer.finished_loads():
            self.metrics.record_load(nbytes, secs)
        if self.prefetcher is not None:
            self.prefetcher.poll()

    def prefetch_start(self, request_id: str, tokens: Sequence[int]) -> None:
        if self.prefetcher is not None:
            self.prefetcher.start(request_id, list(tokens))

    def prefetch_ready(self, request_id: str) -> bool:
        return self.prefetcher is None or self.prefetcher.ready(request_id)

    def prefetch_cancel(self, request_id: str) -> None:
        if self.prefetcher is not None:
            self.prefetcher.cancel(request_id)

    def idle_wait(self, timeout: float) -> None:
        if not self.io.idle():  # a prefetch, or the backups that hold back the pages admission needs
            self.io.wait(timeout)

    def flush(self) -> None:
        """Wait until every load, backup (and L3 write) started so far has finished."""
        self.transfer.wait_loads()
        self.io.wait()
        self.poll()

    def drop_device_cache(self) -> int:
        """Evict every unlocked device copy (host-backed prefixes stay matchable); returns pages freed."""
        self.flush()
        return self.radix.evict(self.radix.evictable_pages)

    def drop_host_cache(self) -> int:
        """Evict every unlocked host copy; returns host pages freed."""
        self.flush()
        return self.radix.evict_host(self.host.num_pages)

    # ---- introspection ---------------------------------------------------------------------------------------
    def tier_stats(self) -> dict:
        out = self.metrics.snapshot()
        host_used = self.host.num_pages - self.host.allocator.num_free
        out["L1"].update(capacity_pages=self.capacity_pages, evicted_pages=self.radix.evicted_pages_total,
                         dropped_to_host_pages=self.radix.device_dropped_pages_total)
        out["L2"].update(capacity_pages=self.host.num_pages, used_pages=host_used,
                         capacity_bytes=self.host.nbytes, evicted_pages=self.radix.host_evicted_pages_total,
                         write_policy=self.write_policy, io_backend=self.transfer.backend, pinned=self.host.pinned)
        if self.store is not None:
            out["L3"].update(store=self.store.stats())
        return out

    def check_no_leak(self, live_pages: Sequence[list[int]] = ()) -> None:
        super().check_no_leak(live_pages)
        tree = self.radix.all_host_pages()
        held = set(self.prefetcher.held_pages) if self.prefetcher else set()
        alloc = self.host.allocator
        free = {p for p in range(alloc.num_pages) if alloc.is_free(p)}
        assert not (tree & held) and not (free & (tree | held)), "a host page has two owners"
        assert len(free) + len(tree) + len(held) == alloc.num_pages, (
            f"host leak: {alloc.num_pages - len(free) - len(tree) - len(held)} pages unaccounted")

    def close(self) -> None:
        if self.prefetcher is not None:
            self.prefetcher.drain()
        self.transfer.wait_loads()
        self.io.close()
        if self.store is not None:
            self.store.close()
