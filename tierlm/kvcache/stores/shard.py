"""`ShardKVStore`: one tensor-parallel rank's view of a shared L3 store.

Under tensor parallelism a page of the cache is split over the ranks (each holds the KV heads it computes),
so each rank stores its part under its own key: the page key hashed with the shard's name (the KV head
range). Parts of different ranks, or of engines sharded differently, never collide, and a reader asking for
a head range gets exactly the bytes written for that range or a miss. The unsharded engine (empty shard
name) uses the page keys as they are.
"""
from __future__ import annotations

import hashlib
from typing import Any, Sequence

from tierlm.kvcache.stores.base import KVStore


def shard_key(key: str, shard: str) -> str:
    """The key of shard `shard` of page `key` (64 hex characters, like page keys)."""
    return key if not shard else hashlib.sha256(f"{key}/{shard}".encode()).hexdigest()


class ShardKVStore(KVStore):
    """Wraps `inner`, renaming every key to this shard's; everything else passes through."""

    def __init__(self, inner: KVStore, shard: str) -> None:
        self.inner, self.shard = inner, shard

    def _keys(self, keys: Sequence[str]) -> list[str]:
        return [shard_key(k, self.shard) for k in keys]

    def attach(self, host_pool: Any) -> None:
        self.host = host_pool
        self.inner.attach(host_pool)

    def batch_exists(self, keys: Sequence[str]) -> int:
        return self.inner.batch_exists(self._keys(keys))

    def batch_get(self, keys: Sequence[str], host_pages: Sequence[int]) -> list[bool]:
        return self.inner.batch_get(self._keys(keys), host_pages)

    def batch_set(self, keys: Sequence[str], host_pages: Sequence[int]) -> list[bool]:
        return self.inner.batch_set(self._keys(keys), host_pages)

    def delete(self, keys: Sequence[str]) -> None:
        self.inner.delete(self._keys(keys))

    def clear(self) -> None:
        self.inner.clear()

    def stats(self) -> dict:
        return self.inner.stats()

    @property
    def shared(self) -> bool:
        return self.inner.shared

    def close(self) -> None:
        self.inner.close()
