"""`RedisKVStore`: L3 pages in Redis (`redis://[:password@]host:port/db`), shared by a fleet of engines.

Batches are pipelined (one round trip per call). An outage (connection refused, timeout) makes the call
fail fast into misses; after a failure the store stays "down" for a short back-off so that a dead server
costs each request nothing, then it tries again.
"""
from __future__ import annotations

import time
from typing import Optional, Sequence

import redis as redis_lib

from tierlm.kvcache.stores.base import BlobKVStore

_PREFIX = "tierlm:kv:"


class StoreDown(ConnectionError):
    """The server failed recently; calls are skipped until the back-off ends."""


class RedisKVStore(BlobKVStore):
    """Pages as Redis strings under `tierlm:kv:<key>` (set only when absent, so engines never clobber)."""

    name = "redis"

    def __init__(self, url: str, timeout: float = 2.0, backoff: float = 1.0, ttl: Optional[int] = None) -> None:
        super().__init__()
        self.url = url
        self.ttl = ttl
        self.backoff = backoff
        self._down_until = 0.0
        self._client = redis_lib.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                                retry_on_timeout=False)

    def _pipe(self, build) -> list:
        if time.monotonic() < self._down_until:
            raise StoreDown(f"{self.url} failed less than {self.backoff:.1f}s ago")
        try:
            pipe = self._client.pipeline(transaction=False)
            build(pipe)
            return pipe.execute()
        except (redis_lib.ConnectionError, redis_lib.TimeoutError, OSError):
            self._down_until = time.monotonic() + self.backoff
            raise

    def _exists_many(self, keys: Sequence[str]) -> list[bool]:
        return [bool(x) for x in self._pipe(lambda p: [p.exists(_PREFIX + k) for k in keys])]

    def _read_many(self, keys: Sequence[str]) -> list[Optional[bytes]]:
        return self._pipe(lambda p: [p.get(_PREFIX + k) for k in keys])

    def _write_many(self, keys: Sequence[str], blobs: Sequence[bytes]) -> list[bool]:
        res = self._pipe(lambda p: [p.set(_PREFIX + k, b, nx=True, ex=self.ttl) for k, b in zip(keys, blobs)])
        return [True for _ in res]  # nx: None means another engine stored it first, which is as good

    def _delete_many(self, keys: Sequence[str]) -> None:
        if keys:
            self._pipe(lambda p: p.delete(*[_PREFIX + k for k in keys]))

    def clear(self) -> None:
        try:
            batch = []
            for k in self._client.scan_iter(match=_PREFIX + "*", count=1000):
                batch.append(k)
                if len(batch) >= 1000:
                    self._client.delete(*batch)
                    batch = []
            if batch:
                self._client.delete(*batch)
        except (redis_lib.ConnectionError, redis_lib.TimeoutError, OSError) as e:
            self._error("clear", e)

    def close(self) -> None:
        self._client.close()
