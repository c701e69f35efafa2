"""The Redis store at page sizes: batches spread over several connections, values moved without loading
anything that is not a page of this pool, small pages pipelined, TTL, and a broken exchange never reused."""
from __future__ import annotations

import tracemalloc

import pytest
import redis
import torch

from tierlm.kvcache.host_pool import HostKVPool
from tierlm.kvcache.layout import KVLayout
from tierlm.kvcache.stores import redis as redis_mod
from tierlm.kvcache.stores.base import encode_page
from tierlm.kvcache.stores.redis import RedisKVStore

KEYS = [f"{i:064x}" for i in range(1, 9)]


@pytest.fixture
def big_host():
    """Pages of 256 KiB: a batch of a few is large enough to be spread over connections."""
    h = HostKVPool(8, KVLayout.gqa(2, 4, 64, torch.float32), page_size=64)
    h.buffer.copy_(torch.randint(0, 256, h.buffer.shape, dtype=torch.uint8))
    return h


def open_store(server, host, **kw) -> RedisKVStore:
    store = RedisKVStore(server.url, timeout=2.0, **kw)
    store.attach(host)
    return store


def test_large_batches_use_several_connections(redis_server, big_host, monkeypatch):
    store = open_store(redis_server, big_host, connections=3)
    parts = []
    real = store._connection
    monkeypatch.setattr(store, "_connection", lambda work: parts.append(1) or real(work))
    assert store.batch_set(KEYS[:6], list(range(6))) == [True] * 6
    assert len(parts) == 3
    ref = big_host.buffer[:6].clone()
    big_host.buffer.zero_()
    parts.clear()
    assert store.batch_get(KEYS[:6], list(range(6))) == [True] * 6 and len(parts) == 3
    assert torch.equal(big_host.buffer[:6], ref)
    page = len(encode_page(KEYS[0], big_host.page_bytes(0)))
    assert store.stats()["bytes_read"] == store.stats()["bytes_written"] == 6 * page
    store.close()


def test_small_pages_are_pipelined_on_one_connection(redis_server, host, monkeypatch):
    store = open_store(redis_server, host)
    sends = []
    conn = store._pool.get_connection()
    real = type(conn).send_packed_command
    store._pool.release(conn)
    monkeypatch.setattr(type(conn), "send_packed_command", lambda self, *a, **k: sends.append(1) or real(self, *a, **k))
    assert store.batch_set(KEYS[:6], list(range(6))) == [True] * 6
    assert store.batch_get(KEYS[:6], list(range(6))) == [True] * 6
    assert len(sends) == 3  # EXISTS, SETs, GETs: one send each
    store.close()


def test_present_pages_are_not_sent_again(redis_server, host):
    store = open_store(redis_server, host)
    store.batch_set(KEYS[:3], [0, 1, 2])
    assert store.batch_set(KEYS[:4], [0, 1, 2, 3]) == [True] * 4
    assert store.stats()["pages_written"] == 4
    store.close()


def test_value_of_another_size_is_never_loaded_whole(redis_server, host):
    store = open_store(redis_server, host)
    client = redis.Redis.from_url(redis_server.url)
    client.set(redis_mod._PREFIX + KEYS[0], b"\0" * (8 << 20))
    client.set(redis_mod._PREFIX + KEYS[1], encode_page(KEYS[2], host.page_bytes(2)))  # another page's value
    store.batch_set(KEYS[2:3], [2])
    tracemalloc.start()
    try:
        ok = store.batch_get(KEYS[:3], [4, 5, 6])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert ok == [False, False, True] and peak < 4 << 20
    assert store.stats()["corrupt"] == 2 and client.exists(*[redis_mod._PREFIX + k for k in KEYS[:2]]) == 0
    assert torch.equal(host.buffer[6], host.buffer[2])
    assert store.batch_get(KEYS[2:3], [7]) == [True]  # the connection is still in step after skipping
    store.close()


def test_ttl_is_set_on_every_page(redis_server, host):
    store = open_store(redis_server, host, ttl="60")
    store.batch_set(KEYS[:2], [0, 1])
    client = redis.Redis.from_url(redis_server.url)
    assert all(0 < client.ttl(redis_mod._PREFIX + k) <= 60 for k in KEYS[:2])
    store.close()


def test_a_connection_that_failed_midway_is_not_reused(redis_server, host, monkeypatch):
    store = open_store(redis_server, host)
    store.batch_set(KEYS[:3], [0, 1, 2])
    real = redis_mod.Replies.read_into
    calls = []

    def fail_once(self, dest):
        calls.append(1)
        if len(calls) == 2:
            raise TimeoutError("timed out")  # the rest of the reply is still on its way
        return real(self, dest)

    monkeypatch.setattr(redis_mod.Replies, "read_into", fail_once)
    assert store.batch_get(KEYS[:3], [4, 5, 6]) == [False] * 3
    monkeypatch.setattr(redis_mod.Replies, "read_into", real)
    store._down_until = 0.0  # past the back-off
    host.buffer[4:7].zero_()
    assert store.batch_get(KEYS[:3], [4, 5, 6]) == [True] * 3 and torch.equal(host.buffer[4:7], host.buffer[:3])
    assert store.stats()["errors"] == 1
    store.close()


def test_calls_after_close_still_work(redis_server, host):
    store = open_store(redis_server, host)
    store.close()
    assert store.batch_set(KEYS[:2], [0, 1]) == [True, True] and store.batch_get(KEYS[:2], [4, 5]) == [True, True]
