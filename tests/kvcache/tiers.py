"""Builds a tiered KV controller over CPU pools the way the engine does (worker-side pools and copy executor,
controller-side manager), and runs a step's copies as the worker would."""
from __future__ import annotations

from typing import Any, Optional

import torch

from tierlm.kvcache.contracts import TierSetup
from tierlm.kvcache.host_pool import HostKVPool
from tierlm.kvcache.layout import KVLayout
from tierlm.kvcache.manager import KVCacheManager
from tierlm.kvcache.pool import KVPool
from tierlm.kvcache.tier_io import TierIO
from tierlm.kvcache.transfer import PageTransfer

CPU = torch.device("cpu")


def make_tiered(page_size: int, num_pages: int, host_pages: int, layout: Optional[KVLayout] = None,
                max_reqs: int = 8, store: Any = None, threads: bool = True, io_backend: str = "auto",
                events: Any = None, **setup: Any) -> tuple[KVCacheManager, KVPool, HostKVPool]:
    layout = layout or KVLayout.gqa(1, 1, 1, torch.float32)
    pool = KVPool(layout, num_pages, page_size, CPU)
    host = HostKVPool(host_pages, layout, page_size)
    if store is not None:
        store.attach(host)
    io = TierIO(PageTransfer(pool, host, io_backend), store, threads)
    kv = KVCacheManager(num_pages, page_size, max_reqs, True,
                        TierSetup(host_pages=host_pages, page_bytes=pool.bytes_per_page, io=io, store=store, **setup),
                        events=events)
    return kv, pool, host


def run_copies(kv: KVCacheManager) -> None:
    """Execute the copies decided so far, as a worker executes a step plan's."""
    copies = kv.take_copies()
    for c in copies.backups:
        kv.io.backup(c.device_pages, c.host_pages, c.keys, c.ticket)
    kv.io.load(copies.load_host, copies.load_device)


def cache_prefix(kv: KVCacheManager, i: int) -> None:
    """Request `i` (three pages, page size 2, no prefix shared with another `i`) finishes into the cache, and
    its copies run."""
    tokens = [i, 1, 2, 3, 4, 5]
    got = kv.admit(str(i), tokens, 6, 6, 0)
    assert kv.grow(got.pages, 6)
    kv.release(got.row, tokens, got.pages, got.node, 0, cache=True)
    run_copies(kv)


def cache_prefixes(kv: KVCacheManager, n: int) -> None:
    """Requests 0 to `n - 1` (`cache_prefix`), one after another."""
    for i in range(n):
        cache_prefix(kv, i)
