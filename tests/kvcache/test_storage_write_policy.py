"""When host copies reach the L3 store (`--hicache-storage-write-policy`): write_back writes a copy as the host
tier evicts it and never waits twice for a store that failed; auto defers until the host tier has
evicted as many pages as it holds and writes through from then on."""
from __future__ import annotations

import logging

from tests.kvcache.test_shutdown import RaisingStore
from tests.kvcache.tiers import cache_prefix, cache_prefixes, make_tiered
from tierlm.kvcache.keys import PageHasher
from tierlm.kvcache.stores.memory import MemoryKVStore
from tierlm.kvcache.stores.redis import RedisKVStore
from tierlm.kvcache.stores.shard import ShardKVStore


def test_storage_write_back_writes_when_the_host_tier_evicts():
    """Storage write_back: no L3 write while the host tier has room; a host copy the store lacks is written
    when the host tier evicts it and stays until that write is done; the next eviction frees it."""
    store = MemoryKVStore()
    kv, _, _ = make_tiered(2, 20, 16, store=store, hasher=PageHasher("t", 2), threads=False,
                           storage_write_policy="write_back")
    try:
        cache_prefixes(kv, 3)
        kv.flush()
        assert kv.tier_stats()["backups"]["pages"] == 9 and store.stats()["bytes_written"] == 0
        assert kv.evict_host(16) == 0  # every host copy went to L3 first
        backups = kv.tier_stats()["backups"]
        assert backups["l3_on_eviction_pages"] == 9 and len(store.data) == 9
        assert kv.evict_host(16) == 9  # written: now they may go
    finally:
        kv.close()
    assert kv.tier_stats()["backups"]["l3_at_close_pages"] == 0  # nothing was left to write at shutdown


def test_storage_write_back_to_a_failing_store_still_evicts(caplog):
    """A write-back whose store raises is counted, and the host tier then evicts the page without it."""
    kv, _, _ = make_tiered(2, 20, 16, store=RaisingStore(), hasher=PageHasher("t", 2), threads=False,
                           storage_write_policy="write_back")
    try:
        with caplog.at_level(logging.CRITICAL, logger="tierlm.kvcache.tier_io"):
            cache_prefixes(kv, 3)
            assert kv.drop_device_cache() == 9
            assert kv.drop_host_cache() == 9
        backups = kv.tier_stats()["backups"]
        assert backups["l3_on_eviction_pages"] == 9 and backups["l3_skipped_on_eviction_pages"] == 9
        assert kv.tier_stats()["L3"]["io_errors"] > 0
        kv.check_no_leak()
    finally:
        kv.close()


def test_auto_defers_until_the_host_tier_has_turned_over():
    """Host tier of 8 pages, prefixes of 3: the first two are not written while there is room; the third finds
    none, so the eviction writes the first two back (and that backup is skipped). A few evictions do not
    switch the policy: it writes through only once the host tier has evicted as many pages as it holds (9
    after the seventh prefix's eviction), and that prefix's own copy is then written at once."""
    store = MemoryKVStore()
    kv, _, _ = make_tiered(2, 40, 8, store=store, hasher=PageHasher("t", 2), threads=False,
                           storage_write_policy="auto")
    try:
        cache_prefixes(kv, 2)
        assert store.stats()["bytes_written"] == 0
        for i in range(2, 5):
            cache_prefix(kv, i)
        backups = kv.tier_stats()["backups"]
        assert kv.evictor.host_evicted_pages_total == 6 and backups["pages"] == 12
        assert backups["l3_on_eviction_pages"] == len(store.data) == 6  # evicted copies only
        for i in range(5, 7):
            cache_prefix(kv, i)
        assert kv.evictor.host_evicted_pages_total == 9
        assert kv.tier_stats()["backups"]["l3_on_eviction_pages"] == 12
        assert len(store.data) == 15  # the 12 written back, and the seventh prefix's 3 written through
        assert kv.tier_stats()["L3"]["write_policy"] == "auto"
    finally:
        kv.close()


class SharedMemoryStore(MemoryKVStore):
    """An in-memory store that says other engines read it, as a fleet's Redis does."""

    @property
    def shared(self) -> bool:
        return True


def test_auto_writes_through_at_once_to_a_store_other_engines_share():
    """Under auto, a shared store gets every host copy as it is made: another replica finds the prefix in L3
    without waiting for this one's host tier to evict it or to shut down."""
    store = SharedMemoryStore()
    kv, _, _ = make_tiered(2, 40, 8, store=ShardKVStore(store, "0"), hasher=PageHasher("t", 2), threads=False,
                           storage_write_policy="auto")
    try:
        cache_prefixes(kv, 2)
        assert len(store.data) == 6 and kv.tier_stats()["backups"]["l3_on_eviction_pages"] == 0
    finally:
        kv.close()
    assert RedisKVStore.shared.fget(object.__new__(RedisKVStore)) and not MemoryKVStore().shared
