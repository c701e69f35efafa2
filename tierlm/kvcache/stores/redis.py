"""`RedisKVStore`: L3 pages in Redis or Valkey (`redis://[:password@]host:port/db`), shared by a fleet of engines.

Built for KV sizes: every value is one whole encoded page; a batch is split over several connections of a
pool (one thread each, so the transfers overlap: the GIL is released while a socket sends or receives), and
each connection keeps one large value (or up to 1 MiB of small ones) in flight. Page bytes are sent from
the host page and received into it (`resp.py`), never copied into Python objects. Connections,
authentication, databases, TLS and timeouts are redis-py's. An outage (connection refused, timeout) makes the
call fail fast into misses; after a failure the store stays "down" for a short back-off so that a dead server
costs each request nothing.
"""
from __future__ import annotations

import concurrent.futures as cf
import logging
import time
from typing import Any, Callable, Optional, Sequence

import redis as redis_lib

from tierlm.kvcache.futures import submit_or_run
from tierlm.kvcache.stores.base import BlobKVStore, CorruptPage, crc32, encoded_size, page_header, parse_header
from tierlm.kvcache.stores.resp import Replies, pack_gets, pack_sets

logger = logging.getLogger(__name__)
_PREFIX = "tierlm:kv:"
_SPLIT_BYTES = 1 << 20  # batches smaller than this stay on one connection
_WINDOW_BYTES = 1 << 20  # page bytes in flight per connection
_OUTAGE = (redis_lib.ConnectionError, redis_lib.TimeoutError, OSError)


class StoreDown(ConnectionError):
    """The server failed recently; calls are skipped until the back-off ends."""


class RedisKVStore(BlobKVStore):
    """Pages as Redis strings under `tierlm:kv:<key>` (set only when absent, so engines never clobber);
    `connections`: how many connections (and threads) one batch is spread over."""

    name = "redis"

    def __init__(self, url: str, timeout: float = 2.0, backoff: float = 1.0, ttl: Optional[int] = None,
                 connections: int | str = 4) -> None:
        super().__init__()
        self.url = url
        self.ttl = None if ttl is None else int(ttl)
        self.backoff = float(backoff)
        self.connections = max(1, int(connections))
        self._down_until = 0.0
        # callers' own small commands (EXISTS, DEL) take a connection too: room for both, waiting if full
        self._pool = redis_lib.BlockingConnectionPool.from_url(
            url, max_connections=2 * self.connections, timeout=timeout, socket_timeout=timeout,
            socket_connect_timeout=timeout, retry_on_timeout=False)
        self._client = redis_lib.Redis(connection_pool=self._pool)
        self._threads = cf.ThreadPoolExecutor(self.connections, thread_name_prefix="tierlm-redis")
        self._set_options = [b"NX"] + ([b"EX", b"%d" % self.ttl] if self.ttl else [])

    # ---- outage handling -----------------------------------------------------------------------------------
    def _check_up(self) -> None:
        if time.monotonic() < self._down_until:
            raise StoreDown(f"{self.url} failed less than {self.backoff:.1f}s ago")

    def _error(self, what: str, e: BaseException) -> None:
        """Count and log (see `BlobKVStore`); an outage also pauses every call for `backoff` seconds."""
        if isinstance(e, _OUTAGE) and not isinstance(e, StoreDown):
            self._down_until = time.monotonic() + self.backoff
        super()._error(what, e)

    def _pipe(self, build: Callable) -> list:
        self._check_up()
        try:
            pipe = self._client.pipeline(transaction=False)
            build(pipe)
            return pipe.execute()
        except _OUTAGE:
            self._down_until = time.monotonic() + self.backoff
            raise

    # ---- pages, spread over connections ---------------------------------------------------------------------
    def _connection(self, work: Callable[[Any, Replies], Any]) -> Any:
        """Run `work(connection, replies)` on a pooled connection; a connection whose exchange failed midway
        is closed rather than reused."""
        conn = self._pool.get_connection()
        try:
            return work(conn, Replies(conn._sock))
        except BaseException:
            conn.disconnect()
            raise
        finally:
            self._pool.release(conn)

    def _spread(self, fn: Callable[[Sequence[str], Sequence[int]], list], keys: Sequence[str],
                pages: Sequence[int]) -> list:
        """`fn` over contiguous parts of the batch, one per connection, in parallel; the results in order."""
        parts = 1 if len(keys) * self.host.bytes_per_page < _SPLIT_BYTES else min(self.connections, len(keys))
        if parts <= 1:
            return fn(keys, pages)
        step = -(-len(keys) // parts)
        jobs = [submit_or_run(self._threads, fn, keys[i:i + step], pages[i:i + step])
                for i in range(0, len(keys), step)]
        cf.wait(jobs)
        return [r for j in jobs for r in j.result()]

    def _window(self) -> int:
        """Requests in flight per connection: one for large pages (a server slows down when several large
        values queue on one connection), more for small ones (round trips would dominate)."""
        return max(1, _WINDOW_BYTES // max(1, self.host.bytes_per_page))

    def _set_part(self, keys: Sequence[str], pages: Sequence[int]) -> list:
        def work(conn, replies: Replies) -> list:
            out, w = [], self._window()
            for i in range(0, len(keys), w):
                views = [self.host.page_bytes(p) for p in pages[i:i + w]]
                heads = [page_header(k, len(v), crc32(v)) for k, v in zip(keys[i:i + w], views)]
                conn.send_packed_command(pack_sets([(_PREFIX + k).encode() for k in keys[i:i + w]], heads, views,
                                                   self._set_options), check_health=False)
                out += [replies.status() for _ in views]  # nil: another engine stored it first, as good
            return out

        return self._connection(work)

    def _get_part(self, keys: Sequence[str], pages: Sequence[int]) -> list:
        size = encoded_size(self.host.bytes_per_page)
        head = memoryview(bytearray(encoded_size(0)))

        def one(replies: Replies, key: str, page: int) -> str:
            n = replies.bulk_length()
            if n is None:
                return "miss"
            if n != size:  # never loaded whole: it cannot be a page of this pool
                replies.skip(n)
                replies.end_bulk()
                return "corrupt"
            dest = self.host.page_bytes(page)
            replies.read_into(head)
            replies.read_into(dest)
            replies.end_bulk()
            return _verify(key, head, dest)

        def work(conn, replies: Replies) -> list:
            out, w = [], self._window()
            for i in range(0, len(keys), w):
                conn.send_packed_command(pack_gets([(_PREFIX + k).encode() for k in keys[i:i + w]]),
                                         check_health=False)
                out += [one(replies, k, p) for k, p in zip(keys[i:i + w], pages[i:i + w])]
            return out

        return self._connection(work)

    def batch_get(self, keys: Sequence[str], host_pages: Sequence[int]) -> list[bool]:
        self._count(get_calls=1)
        if not keys:
            return []
        t0 = time.perf_counter()
        try:
            self._check_up()
            results = self._spread(self._get_part, list(keys), list(host_pages))
        except Exception as e:  # noqa: BLE001 - outage = miss
            self._error("get", e)
            return [False] * len(keys)
        ok = [r == "ok" for r in results]
        corrupt = [k for k, r in zip(keys, results) if r == "corrupt"]
        for key in corrupt:
            logger.warning("KV store redis: page %s is corrupt; treating it as a miss and removing it", key[:16])
        self._count(hits=sum(ok), misses=len(keys) - sum(ok) - len(corrupt), corrupt=len(corrupt),
                    bytes_read=sum(ok) * encoded_size(self.host.bytes_per_page),
                    read_seconds=time.perf_counter() - t0)
        if corrupt:
            self._remove_corrupt(corrupt)
        return ok

    def _store_pages(self, keys: Sequence[str], host_pages: Sequence[int]) -> list[bool]:
        self._spread(self._set_part, list(keys), list(host_pages))
        return [True] * len(keys)  # NX left unset: another engine stored the page first, which is as good

    # ---- bytes (the BlobKVStore contract) ------------------------------------------------------------------
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
        except _OUTAGE as e:
            self._error("clear", e)

    @property
    def shared(self) -> bool:
        return True  # a network store is there for the fleet

    def close(self) -> None:
        self._threads.shutdown(wait=True)
        self._pool.disconnect()


def _verify(key: str, head: memoryview, payload: memoryview) -> str:
    """'ok' when the header names `key`, the payload's length and its CRC-32; else 'corrupt'."""
    try:
        stored_key, length, crc = parse_header(head)
    except CorruptPage:
        return "corrupt"
    return "ok" if stored_key == key and length == len(payload) and crc32(payload) == crc else "corrupt"
