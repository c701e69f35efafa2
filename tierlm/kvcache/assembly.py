"""`assemble`: builds the parts a `KVCacheManager` decides with and connects them, for its `TierSetup` (or
for none: then only the evictor exists, over the prefix cache).

The parts are the cost model (load or recompute), the copy queue of the next step plan, the write policies
(`Backups`), the host tier's eviction order, the evictor and the L3 prefetcher. They reach one another
through the manager, by callbacks that read its state when they are called, not when they are built.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from tierlm.kvcache.backups import Backups
from tierlm.kvcache.contracts import TierSetup
from tierlm.kvcache.copy_queue import CopyQueue
from tierlm.kvcache.cost import CostModel
from tierlm.kvcache.eviction import Evictor
from tierlm.kvcache.prefetch import L3Prefetcher
from tierlm.kvcache.retention import HostRetention

if TYPE_CHECKING:
    from tierlm.kvcache.manager import KVCacheManager


def assemble(kv: "KVCacheManager", tiers: Optional[TierSetup], num_pages: int) -> None:
    """Set `kv.cost`, `kv.copies`, `kv.backups`, `kv.retention`, `kv.evictor` and `kv.prefetcher`."""
    ps = kv.page_size
    # synchronous copies (torch backend) overlap nothing: there "auto" loads every hit
    kv.cost = CostModel(ps, tiers.page_bytes, tiers.load_policy, kv.io.backend != "torch",
                        tiers.max_step_tokens) if tiers else None
    kv.copies = CopyQueue(kv.io, lambda: kv.backups.take() if kv.backups else [], kv.metrics)
    kv.backups = Backups.for_tiers(tiers, kv.radix, kv._alloc_host, kv.copies.run_backups, kv.metrics,
                                   lambda: kv.evictor.host_evicted_pages_total,
                                   lambda: kv.metrics.tiers["L3"]["tokens"] // ps,
                                   lambda: kv.cost.l3_pays()) if tiers else None
    kv.retention = (HostRetention(tiers.eviction_policy, num_pages + tiers.host_pages, ps, lambda: kv.radix.clock)
                    if tiers else None)
    reuse = bool(kv.backups and kv.backups.reuse_copying)
    kv.evictor = Evictor(kv.radix, kv.allocator.free, kv._free_host,
                         lambda futures: kv.copies.wait_for_io(futures, reuse),
                         kv.backups.write_back if tiers and tiers.write_policy == "write_back" else None,
                         kv.backups.store_back if kv.backups and kv.store is not None else None,
                         kv.retention, kv.copies.fence if reuse else None) if kv.radix else None
    kv.prefetcher = (L3Prefetcher(kv.store, kv.io.submit_store, kv.hasher, kv._alloc_host, kv.host_allocator.free,
                                  kv.radix, kv.metrics, tiers.prefetch_policy, tiers.prefetch_timeout,
                                  tiers.prefetch_threshold, max_pages=tiers.host_pages // 2, cost=kv.cost,
                                  host_free=lambda: kv.host_allocator.num_free, lookup=kv.io.submit_lookup)
                     if kv.store is not None else None)
