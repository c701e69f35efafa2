"""L3 stores, keys and host-pool sizing: checksums, LRU budget, restart, loader, redis outage."""
from __future__ import annotations

import time

import pytest
import torch

from tierlm.kvcache.host_pool import HostKVPool, host_pool_pages
from tierlm.kvcache.keys import PageHasher, model_fingerprint, weights_identity
from tierlm.kvcache.layout import KVLayout
from tierlm.kvcache.stores import decode_page, encode_page, open_store
from tierlm.kvcache.stores.base import CorruptPage
from tierlm.kvcache.stores.file import FileKVStore
from tierlm.kvcache.stores.memory import MemoryKVStore

KEYS = [f"{i:064x}" for i in range(1, 7)]


def roundtrip(store, host, n=3):
    store.attach(host)
    assert store.batch_set(KEYS[:n], list(range(n))) == [True] * n
    assert store.batch_exists(KEYS) == n
    ref = host.buffer[:n].clone()
    host.buffer[4:4 + n].zero_()
    assert store.batch_get(KEYS[:n], list(range(4, 4 + n))) == [True] * n
    assert torch.equal(host.buffer[4:4 + n], ref)


def test_codec_rejects_every_kind_of_damage():
    blob = encode_page(KEYS[0], b"x" * 100)
    assert bytes(decode_page(KEYS[0], blob, 100)) == b"x" * 100
    for bad, key, n in [(blob[:-1], KEYS[0], 100), (blob, KEYS[1], 100), (blob, KEYS[0], 99),
                        (blob[:-1] + b"y", KEYS[0], 100), (b"junk", KEYS[0], 100)]:
        with pytest.raises(CorruptPage):
            decode_page(key, bad, n)


def test_file_store_roundtrip_restart_and_corruption(tmp_path, host):
    store = FileKVStore(tmp_path, max_bytes=10**6)
    roundtrip(store, host)
    again = FileKVStore(tmp_path, max_bytes=10**6)  # a restart rebuilds the index from disk
    again.attach(host)
    assert again.stats()["pages"] == 3 and again.batch_exists(KEYS) == 3
    path, offset, length = again.locate(KEYS[1])
    with open(path, "r+b") as f:  # a torn write: the end of the page never reached the disk
        f.seek(offset + length // 2)
        f.write(bytes(length - length // 2))
    assert again.batch_get(KEYS[:3], [4, 5, 6]) == [True, False, True]
    assert again.stats()["corrupt"] == 1
    third = FileKVStore(tmp_path, max_bytes=10**6)  # the damaged page was removed for good, the others stay
    third.attach(host)
    assert third.batch_exists(KEYS[1:2]) == 0 and third.batch_get([KEYS[0], KEYS[2]], [4, 6]) == [True, True]
    assert third.stats()["corrupt"] == 0


def test_file_store_lru_budget(tmp_path, host):
    per = len(encode_page(KEYS[0], host.page_bytes(0)))
    store = FileKVStore(tmp_path, max_bytes=3 * per)
    store.attach(host)
    store.batch_set(KEYS[:3], [0, 1, 2])
    time.sleep(0.01)
    store.batch_get(KEYS[:1], [5])  # KEYS[0] becomes most recently used
    store.batch_set(KEYS[3:4], [3])
    assert [store.batch_exists([k]) for k in KEYS[:4]] == [1, 0, 1, 1]
    assert store.stats()["bytes"] <= 3 * per and store.stats()["evicted_pages"] == 1
    assert not list(tmp_path.rglob(".tmp-*"))


@pytest.mark.parametrize("backend", ["memory", "file", "redis"])
def test_damaged_page_is_a_miss_then_replaced(backend, request, tmp_path, host):
    store = {"memory": lambda: MemoryKVStore(), "file": lambda: FileKVStore(tmp_path, 10**6),
             "redis": lambda: open_store(request.getfixturevalue("redis_server").url, 1, 1.0)}[backend]()
    store.attach(host)
    assert store.batch_set(KEYS[:2], [0, 1]) == [True, True]
    damaged = bytearray(encode_page(KEYS[0], host.page_bytes(0)))
    damaged[-1] ^= 0xFF  # payload no longer matches its checksum
    store._delete_many(KEYS[:1])
    store._write_many(KEYS[:1], [bytes(damaged)])
    assert store.batch_get(KEYS[:2], [4, 5]) == [False, True]
    assert store.stats()["corrupt"] == 1 and store.batch_exists(KEYS[:1]) == 0  # removed, not kept forever
    assert store.batch_set(KEYS[:1], [0]) == [True]
    host.buffer[4].zero_()
    assert store.batch_get(KEYS[:1], [4]) == [True] and torch.equal(host.buffer[4], host.buffer[0])
    store.close()


def test_loader_and_url_forms(tmp_path, host):
    roundtrip(open_store("tierlm.kvcache.stores.memory:MemoryKVStore", 1, 1.0), host)
    roundtrip(open_store(f"file://{tmp_path / 'a'}", 10**6, 1.0), host)
    assert open_store(f"file://localhost{tmp_path / 'b'}", 10**6, 1.0).dir == tmp_path / "b"
    assert open_store(str(tmp_path / "c"), 10**6, 1.0).dir == tmp_path / "c"
    assert open_store("file", 10**6, 1.0, default_dir=str(tmp_path / "d")).dir == tmp_path / "d"


@pytest.mark.parametrize("url", [
    "redis://localhost:notaport/0", "redis://localhost:99999/0", "redis://:6379/0", "redis://localhost:6379/db",
    "redis://localhost:6379/0?socket_timeout=abc", "unix://", "file://", "file:///", "file://relative/dir",
    "file:relative", "nope://x", "s3://bucket/kv", ":Store", "tierlm.kvcache.stores.memory:",
    "no.such.module:Store", "tierlm.kvcache.keys:PageHasher", "tierlm.kvcache.stores.file:FileKVStore?bogus=1"])
def test_malformed_store_url_is_one_error_naming_the_flag(url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where a relative path would wrongly create a store
    with pytest.raises(ValueError, match="^--kv-store "):
        open_store(url, 1, 1.0)
    assert not any(tmp_path.iterdir())


def test_redis_roundtrip_then_outage_fails_fast(redis_server, host):
    store = open_store(redis_server.url, 1, 0.5)
    roundtrip(store, host)
    redis_server.kill()
    t0 = time.perf_counter()
    assert store.batch_exists(KEYS) == 0
    assert store.batch_get(KEYS[:2], [0, 1]) == [False, False]
    assert store.batch_set(KEYS[:2], [0, 1]) == [False, False]
    assert time.perf_counter() - t0 < 3.0
    assert store.stats()["errors"] == 3


def test_keys_are_chained_and_namespaced():
    f32, bf16 = KVLayout.gqa(2, 1, 4, torch.float32), KVLayout.gqa(2, 1, 4, "bfloat16")
    fp = model_fingerprint({"hidden_size": 8, "_name_or_path": "/home/a"}, "dummy-seed-0", f32, 4)
    assert fp == model_fingerprint({"hidden_size": 8, "_name_or_path": "/elsewhere"}, "dummy-seed-0",
                                   KVLayout.gqa(2, 1, 4, "float32"), 4)
    assert fp != model_fingerprint({"hidden_size": 8}, "dummy-seed-1", f32, 4)
    assert fp != model_fingerprint({"hidden_size": 8}, "dummy-seed-0", bf16, 4)
    assert fp != model_fingerprint({"hidden_size": 8}, "dummy-seed-0", f32, 8)
    assert fp != model_fingerprint({"hidden_size": 8}, "dummy-seed-0", KVLayout.latent(2, 8, torch.float32), 4)
    h, other = PageHasher(fp, 4), PageHasher(fp + "x", 4)
    full = h.chain(list(range(10)))
    assert len(full) == 2 and h.chain(list(range(4, 8)), parent=full[0]) == full[1:]
    assert h.chain([9, 1, 2, 3, 4, 5, 6, 7])[1] != full[1]  # a page's key depends on everything before it
    assert other.chain(list(range(8))) != full
    assert weights_identity(None, "dummy", 3) == "dummy-seed-3"


def test_tiny_model_weights_identity_changes_with_content(tiny_qwen3, tmp_path):
    import shutil

    copy = tmp_path / "m"
    shutil.copytree(tiny_qwen3, copy)
    assert weights_identity(copy, "auto", 0) == weights_identity(tiny_qwen3, "auto", 0)
    f = next(copy.glob("*.safetensors"))
    data = bytearray(f.read_bytes())
    data[-3] ^= 1
    f.write_bytes(bytes(data))
    assert weights_identity(copy, "auto", 0) != weights_identity(tiny_qwen3, "auto", 0)


def test_host_pool_sizing_refuses_what_ram_cannot_hold():
    assert host_pool_pages(100, 1024, 2.0, None) == 200
    assert host_pool_pages(100, 1024, 2.0, 1 / 1024) == 1024
    with pytest.raises(ValueError, match="--hicache-size.*available"):
        host_pool_pages(100, 1024, 2.0, 1e9)
    with pytest.raises(ValueError, match="--hicache-ratio"):
        host_pool_pages(100, 2**30, 1e6, None)


@pytest.mark.parametrize("layout, pages", [
    (lambda: KVLayout.gqa(32, 8, 128, torch.bfloat16), 32),  # Llama-3.1-8B: 2 MiB pages
    (lambda: KVLayout.latent(27, 576, torch.bfloat16), 134),  # DeepSeek-V2-Lite: 486 KiB pages
    (lambda: KVLayout.gqa(2, 1, 4, torch.float32), 1024),  # a tiny model: capped
])
def test_a_fetch_call_is_about_64_mib_of_pages(layout, pages):
    store = MemoryKVStore()
    assert store.call_pages == 32  # before a host pool is attached
    store.attach(HostKVPool(2, layout(), page_size=16))
    assert store.call_pages == pages


def test_a_fetch_reads_in_calls_of_the_stores_call_pages(host):
    from tierlm.kvcache.futures import finished
    from tierlm.kvcache.prefetch_op import PrefetchOp

    class Recording(MemoryKVStore):
        call_pages = 3
        sizes: list

        def batch_get(self, keys, host_pages):
            self.sizes.append(len(keys))
            return super().batch_get(keys, host_pages)

    store = Recording()
    store.sizes = []
    store.attach(host)
    keys = [f"{i:064x}" for i in range(1, 8)]
    store.batch_set(keys, list(range(7)))
    op = PrefetchOp(tokens=[], keys=keys, first_page=0, created=0.0, check=finished(lambda: 7),
                    host_pages=list(range(7)))
    op.read_from(store)
    assert store.sizes == [3, 3, 1] and op.progress == 7
