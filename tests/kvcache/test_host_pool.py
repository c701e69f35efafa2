"""The host pool's memory and the file store: pages that are whole aligned blocks move in place, pages that
are not (an MLA model's, for one) through the bounce buffer a run at a time, never a transfer per page."""
from __future__ import annotations

import mmap
import os

import pytest
import torch

from tierlm.kvcache.host_pool import HostKVPool
from tierlm.kvcache.layout import KVLayout
from tierlm.kvcache.stores import record_io, segment
from tierlm.kvcache.stores.file import FileKVStore

BLOCK_LAYOUT = KVLayout.gqa(2, 1, 64, torch.float32)  # 4 tokens = 4 KiB per page
ODD_LAYOUT = KVLayout.gqa(3, 1, 20, torch.float32)  # 4 tokens = 1,920 bytes per page
MLA_LAYOUT = KVLayout.latent(1, 160, torch.float32)  # 4 tokens = 2,560 bytes per page: 5 x 512
KEYS = [f"{i:064x}" for i in range(1, 17)]


def filled(layout: KVLayout, pages: int) -> HostKVPool:
    host = HostKVPool(pages, layout, page_size=4)
    host.buffer.copy_(torch.randint(0, 256, host.buffer.shape, dtype=torch.uint8))
    return host


def store_on(tmp_path, host, direct: bool) -> FileKVStore:
    if direct and not record_io.probe_direct(str(tmp_path)):
        pytest.skip("this file system does not take O_DIRECT")
    store = FileKVStore(tmp_path, max_bytes=1 << 30, direct=direct, io_threads=2)
    store.attach(host)
    return store


def count_calls(monkeypatch, names: tuple[str, ...]) -> list[str]:
    calls: list[str] = []
    for name in names:
        def counted(fd, data, offset, real=getattr(os, name), name=name):
            calls.append(name)
            return real(fd, data, offset)
        monkeypatch.setattr(os, name, counted)
    return calls


@pytest.mark.parametrize("pages", [1, 3, 64])
def test_pageable_pool_starts_on_a_4k_boundary(pages):
    host = HostKVPool(pages, BLOCK_LAYOUT, page_size=4)
    assert host.buffer.data_ptr() % 4096 == 0
    assert host.buffer.shape == (pages, 4096) and host.buffer.is_contiguous()
    host.buffer[-1].fill_(7)  # the last page is the pool's own memory, not past it
    assert bytes(host.page_bytes(pages - 1)) == b"\x07" * 4096


def test_file_store_moves_whole_block_pages_in_place(tmp_path, monkeypatch):
    host = filled(BLOCK_LAYOUT, 16)
    want = host.buffer[:8].clone()
    store = store_on(tmp_path, host, direct=True)

    def table_only(_, n: int) -> memoryview:  # the segment's table block is the one thing bounced
        assert n <= segment.ALIGN, "a page went through the bounce buffer"
        return memoryview(mmap.mmap(-1, segment.ALIGN))[:n]
    monkeypatch.setattr(record_io.Scratch, "get", table_only)
    assert store.batch_set(KEYS[:8], list(range(8))) == [True] * 8
    assert store.batch_get(KEYS[:8], list(range(8, 16))) == [True] * 8
    assert torch.equal(host.buffer[8:], want)


@pytest.mark.parametrize("direct", [False, True])
def test_pages_of_odd_sizes_move_a_run_per_transfer(tmp_path, monkeypatch, direct):
    # buffered: in place with the pads between records; O_DIRECT: through the bounce buffer (1,920 bytes is
    # not a multiple of any O_DIRECT alignment)
    host = filled(ODD_LAYOUT, 32)
    store = store_on(tmp_path, host, direct)
    writes = count_calls(monkeypatch, ("pwrite", "pwritev"))
    assert store.batch_set(KEYS, list(range(16))) == [True] * 16
    assert len(writes) == 3  # two runs of eight records (one per I/O thread), then the table
    monkeypatch.undo()
    reads = count_calls(monkeypatch, ("preadv",))
    assert store.batch_get(KEYS, list(range(16, 32))) == [True] * 16
    assert len(reads) == 2 and torch.equal(host.buffer[16:], host.buffer[:16])


def test_bounced_runs_go_in_chunks_and_damage_stays_with_its_page(tmp_path, monkeypatch):
    host = filled(ODD_LAYOUT, 32)
    store = store_on(tmp_path, host, direct=True)
    assert store.batch_set(KEYS, list(range(16))) == [True] * 16
    monkeypatch.setattr(record_io, "_BOUNCE_MAX", 3 * segment.ALIGN)  # chunks of three records at most
    path, off, _ = store.locate(KEYS[4])
    data = bytearray(path.read_bytes())
    data[off + 5] ^= 0xFF
    path.write_bytes(bytes(data))
    reads = count_calls(monkeypatch, ("preadv",))
    got = store.batch_get(KEYS, list(range(16, 32)))
    assert len(reads) == 6 and got == [i != 4 for i in range(16)]  # each run of eight in chunks of 3, 3, 2
    assert torch.equal(host.buffer[16:20], host.buffer[:4]) and torch.equal(host.buffer[21:], host.buffer[5:16])
    assert store.stats()["corrupt"] == 1


def test_pages_of_512_byte_multiples_move_in_place_with_o_direct(tmp_path, monkeypatch):
    """An MLA model's pages are a multiple of 512 bytes but not of 4 KiB: where the device takes 512-byte
    O_DIRECT transfers they move in place, the pads between records read into a small buffer."""
    if record_io.probe_direct(str(tmp_path)) != 512:
        pytest.skip("this file system does not take 512-byte O_DIRECT transfers")
    host = filled(MLA_LAYOUT, 32)
    store = store_on(tmp_path, host, direct=True)
    assert store.stats()["direct_io_align"] == 512

    def table_only(_, n: int) -> memoryview:
        assert n <= segment.ALIGN, "a page went through the bounce buffer"
        return memoryview(mmap.mmap(-1, segment.ALIGN))[:n]
    monkeypatch.setattr(record_io.Scratch, "get", table_only)
    writes = count_calls(monkeypatch, ("pwrite", "pwritev"))
    assert store.batch_set(KEYS, list(range(16))) == [True] * 16
    assert writes.count("pwritev") == 2
    reads = count_calls(monkeypatch, ("preadv",))
    assert store.batch_get(KEYS, list(range(16, 32))) == [True] * 16
    assert len(reads) == 2 and torch.equal(host.buffer[16:], host.buffer[:16])
    path, off, n = store.locate(KEYS[3])
    with open(path, "rb") as f:  # the pad after a record was written as zeros
        f.seek(off + n)
        assert f.read(segment.align_up(n) - n) == bytes(segment.align_up(n) - n)


@pytest.mark.parametrize("seed", range(6))
def test_random_page_sizes_and_calls_round_trip(tmp_path, monkeypatch, seed):
    """Page sizes of whole blocks, of 512-byte multiples and of neither, in calls of random sizes, with and
    without O_DIRECT, small bounce chunks: every page reads back as written, from a restarted store too."""
    import random

    rng = random.Random(seed)
    width = rng.choice([20, 40, 64, 100, 160, 256, 1000])  # float32 latent of 4 tokens: 320 bytes to 16,000
    host = filled(KVLayout.latent(rng.randint(1, 3), width, torch.float32), 64)
    direct = rng.random() < 0.5 and record_io.probe_direct(str(tmp_path)) > 0
    monkeypatch.setattr(record_io, "_BOUNCE_MAX", rng.choice([segment.ALIGN, 3 * segment.ALIGN, 32 << 20]))
    store = FileKVStore(tmp_path, max_bytes=1 << 30, direct=direct, io_threads=rng.randint(1, 4))
    store.attach(host)
    keys = [f"{i:064x}" for i in range(1, 33)]
    at = 0
    while at < 32:
        n = rng.randint(1, 9)
        assert store.batch_set(keys[at:at + n], list(range(at, min(32, at + n)))) == [True] * len(keys[at:at + n])
        at += n
    store.close()
    store = FileKVStore(tmp_path, max_bytes=1 << 30, direct=direct, io_threads=rng.randint(1, 4))
    store.attach(host)
    order = list(range(32))
    rng.shuffle(order)  # reads in another order and grouping than the writes
    at = 0
    while at < 32:
        n = rng.randint(1, 12)
        idx = order[at:at + n]
        assert store.batch_get([keys[i] for i in idx], [32 + i for i in idx]) == [True] * len(idx)
        at += n
    assert torch.equal(host.buffer[32:], host.buffer[:32])
    store.close()
