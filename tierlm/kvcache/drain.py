"""Whole-cache operations over a `KVCacheManager`: run every queued copy and wait for it (`flush`), empty a
tier (`drop_device_cache`, `drop_host_cache`), and the shutdown sequence (`shutdown`)."""
from __future__ import annotations

from typing import Any

from tierlm.kvcache.backups import FLUSH_UNSTORED_S


def flush(kv: Any) -> None:
    """Run every queued copy and wait until every load, backup (and L3 write) has finished."""
    if kv.io is None:
        return
    copies = kv.take_copies()
    for c in copies.backups:
        kv.io.backup(c.device_pages, c.host_pages, c.keys, c.ticket)
    kv.io.wait()  # every host copy is final before a load may read it (`StepCopies.fence`)
    kv.io.load(copies.load_host, copies.load_device)
    kv.io.transfer.wait_loads()
    kv.io.wait()
    kv.poll()


def drop_device_cache(kv: Any) -> int:
    """Evict every unlocked device copy (host-backed prefixes stay matchable); returns pages freed."""
    flush(kv)
    return kv.evict(kv.radix.evictable_pages) if kv.radix else 0


def drop_host_cache(kv: Any) -> int:
    """Evict every unlocked host copy; returns host pages freed. Under storage write_back a copy the store
    lacks is written first and goes in a later round (a parent only after its children)."""
    freed, started = 0, -1
    while kv.tiers and started != kv.metrics.backups["l3_on_eviction_pages"]:
        started = kv.metrics.backups["l3_on_eviction_pages"]
        flush(kv)
        got = kv.evict_host(kv.tiers.host_pages)
        freed += got
        if got:
            started = -1  # progress: one more round
    return freed


def shutdown(kv: Any) -> None:
    """Stop prefetching, complete every decided copy, write what storage write_back still owes L3 (bounded),
    then stop the copy executor and close the store."""
    if kv.io is None:
        return
    if kv.prefetcher is not None:
        kv.prefetcher.drain()
    flush(kv)  # host copies still queued or copying become valid
    kv.backups.flush_unstored(kv.io.wait, kv.io.l3_queue_bytes // 2, FLUSH_UNSTORED_S)
    flush(kv)
    kv.io.close()
    if kv.store is not None:
        kv.store.close()
