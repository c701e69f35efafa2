"""The file store's segments: one per call, O_DIRECT or not, straight into aligned host pages, removals that
survive restarts, engines sharing a directory live, and damage of every kind read as a miss."""
from __future__ import annotations

import errno
import logging
import mmap
import os

import numpy as np
import pytest
import torch

from tierlm.kvcache.stores import file as file_mod
from tierlm.kvcache.stores import record_io, segment, segment_index
from tierlm.kvcache.stores.base import encoded_size
from tierlm.kvcache.stores.file import FileKVStore

KEYS = [f"{i:064x}" for i in range(1, 9)]


def store_at(directory, host, **kw) -> FileKVStore:
    store = FileKVStore(directory, kw.pop("max_bytes", 10**6), **kw)
    store.attach(host)
    return store


def segments(directory) -> list:
    return sorted(directory.glob("*.kvs"))


def read_back(store, host, keys) -> bool:
    """Whether `keys` (stored from host pages 0..) read back into pages 4.. with the same bytes."""
    n = len(keys)
    host.buffer[4:4 + n].zero_()
    return store.batch_get(keys, list(range(4, 4 + n))) == [True] * n and torch.equal(host.buffer[4:4 + n],
                                                                                      host.buffer[:n])


class AlignedHost:
    """A host pool whose pages are page-aligned and a multiple of 4 KiB long (as pinned CUDA host memory is)."""

    def __init__(self, pages: int, page_bytes: int) -> None:
        self.bytes_per_page = page_bytes
        self._mem = mmap.mmap(-1, pages * page_bytes)
        self.buffer = torch.from_numpy(np.frombuffer(self._mem, dtype=np.uint8).reshape(pages, page_bytes))
        self.buffer.copy_(torch.randint(0, 256, self.buffer.shape, dtype=torch.uint8))

    def page_bytes(self, page: int) -> memoryview:
        return memoryview(self.buffer[page].numpy())


def test_a_call_is_one_segment_and_large_calls_are_split(tmp_path, host, monkeypatch):
    store = store_at(tmp_path / "a", host)
    assert store.batch_set(KEYS[:4], [0, 1, 2, 3]) == [True] * 4
    assert len(segments(tmp_path / "a")) == 1 and read_back(store, host, KEYS[:4])
    monkeypatch.setattr(file_mod, "_SEGMENT_BYTES", 2 * segment.ALIGN)
    split = store_at(tmp_path / "b", host)
    assert split.batch_set(KEYS[:4], [0, 1, 2, 3]) == [True] * 4
    assert len(segments(tmp_path / "b")) == 2 and read_back(split, host, KEYS[:4])
    assert not list((tmp_path / "b").glob(".tmp-*"))


@pytest.mark.parametrize("write_direct, read_direct", [(False, True), (True, False)])
def test_direct_and_buffered_io_share_one_format(tmp_path, host, write_direct, read_direct):
    if not record_io.probe_direct(str(tmp_path)):
        pytest.skip("no O_DIRECT on this file system")
    writer = store_at(tmp_path, host, direct=write_direct)
    assert writer.stats()["direct_io"] == write_direct
    writer.batch_set(KEYS[:3], [0, 1, 2])
    reader = store_at(tmp_path, host, direct=read_direct)
    assert reader.stats()["direct_io"] == read_direct and read_back(reader, host, KEYS[:3])


def test_aligned_host_pages_need_no_bounce_buffer(tmp_path, monkeypatch):
    if not record_io.probe_direct(str(tmp_path)):
        pytest.skip("no O_DIRECT on this file system")
    host = AlignedHost(8, 2 * segment.ALIGN)
    store = store_at(tmp_path, host)
    assert store.direct

    def no_bounce(*_):
        raise AssertionError("bounce buffer used for aligned pages")

    monkeypatch.setattr(record_io.Scratch, "get", lambda self, n: no_bounce() if n > segment.ALIGN else
                        memoryview(mmap.mmap(-1, segment.ALIGN))[:n])  # the table block may use it
    assert store.batch_set(KEYS[:3], [0, 1, 2]) == [True] * 3
    assert read_back(store, host, KEYS[:3])


def test_no_o_direct_falls_back_to_buffered_io(tmp_path, host, monkeypatch, caplog):
    real_open = os.open

    def no_direct(path, flags, *args):
        if flags & getattr(os, "O_DIRECT", 0):
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", no_direct)
    with caplog.at_level(logging.WARNING):
        store = store_at(tmp_path, host, direct="1")  # asked for, not available: one warning, then buffered
    assert not store.direct and "O_DIRECT is not supported" in caplog.text
    assert store.batch_set(KEYS[:2], [0, 1]) == [True, True] and read_back(store, host, KEYS[:2])


def test_direct_transfers_refused_later_retry_buffered(tmp_path, host, monkeypatch):
    store = store_at(tmp_path, host)
    store.direct = True
    real = record_io.write_records

    def refuse_direct(fd, offset, payloads, direct, scratch, align):
        if direct:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, offset, payloads, direct, scratch, align)

    monkeypatch.setattr(file_mod, "write_records", refuse_direct)
    assert store.batch_set(KEYS[:2], [0, 1]) == [True, True]
    assert not store.direct and store.stats()["errors"] == 0 and read_back(store, host, KEYS[:2])


def test_small_aligned_transfers_refused_later_step_back_to_whole_blocks(tmp_path, host, monkeypatch):
    store = store_at(tmp_path, host)
    store.direct, store.dio_align = True, 512
    real = record_io.write_records

    def refuse_small(fd, offset, payloads, direct, scratch, align):
        if direct and align < segment.ALIGN:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, offset, payloads, direct, scratch, align)

    monkeypatch.setattr(file_mod, "write_records", refuse_small)
    assert store.batch_set(KEYS[:2], [0, 1]) == [True, True]
    assert store.direct and store.dio_align == segment.ALIGN and store.stats()["errors"] == 0


def test_removals_and_lru_order_survive_a_restart(tmp_path, host):
    per = encoded_size(host.bytes_per_page)
    store = store_at(tmp_path, host)
    store.batch_set(KEYS[:2], [0, 1])
    store.batch_set(KEYS[2:4], [2, 3])
    first, second = store.locate(KEYS[0])[0], store.locate(KEYS[2])[0]
    store.delete(KEYS[1:2])  # punched out of the first segment
    os.utime(first, (2000, 2000))  # the first segment was used more recently than the second
    os.utime(second, (1000, 1000))
    again = store_at(tmp_path, host)
    assert again.stats()["pages"] == 3 and again.stats()["bytes"] == 3 * per and again.stats()["corrupt"] == 0
    assert [again.batch_exists([k]) for k in KEYS[:4]] == [1, 0, 1, 1]
    small = store_at(tmp_path, host, max_bytes=2 * per)  # over budget: the least recently used page goes
    assert [small.batch_exists([k]) for k in KEYS[:4]] == [1, 0, 0, 1]
    host.buffer[4:6].zero_()
    assert small.batch_get([KEYS[0], KEYS[3]], [4, 5]) == [True, True]
    assert torch.equal(host.buffer[4], host.buffer[0]) and torch.equal(host.buffer[5], host.buffer[3])


def test_engines_sharing_a_directory_see_each_others_writes_and_removals(tmp_path, host, caplog):
    a, b = store_at(tmp_path, host), store_at(tmp_path, host)
    assert a.batch_set(KEYS[:3], [0, 1, 2]) == [True] * 3
    assert b.batch_exists(KEYS[:3]) == 3 and read_back(b, host, KEYS[:3])  # written after b started
    a.delete(KEYS[1:2])  # punched out under b's index
    with caplog.at_level(logging.WARNING):
        assert b.batch_get(KEYS[:3], [4, 5, 6]) == [True, False, True]
    assert b.stats()["corrupt"] == 0 and "corrupt" not in caplog.text
    a.clear()  # the whole segment goes
    assert b.batch_get(KEYS[:1], [4]) == [False] and b.stats()["errors"] == 0 and b.stats()["pages"] == 0


def test_a_page_stored_twice_is_kept_once(tmp_path, host):
    a, b = store_at(tmp_path, host), store_at(tmp_path, host)
    a.batch_set(KEYS[:2], [0, 1])
    b.batch_set(KEYS[1:3], [1, 2])  # b writes KEYS[1] again: it did not look at the directory first
    assert a.batch_exists(KEYS[2:3]) == 1 and b.batch_exists(KEYS[:1]) == 1  # each adopts the other's segment
    assert read_back(a, host, KEYS[:3]) and read_back(b, host, KEYS[:3])  # and they agree on which copy stays
    c = store_at(tmp_path, host)
    per = encoded_size(host.bytes_per_page)
    assert c.stats()["pages"] == 3 and c.stats()["bytes"] == 3 * per and read_back(c, host, KEYS[:3])
    d = store_at(tmp_path, host)  # the copy that lost was removed for good, the same one for every engine
    assert d.stats()["pages"] == 3 and d.stats()["corrupt"] == 0 and read_back(d, host, KEYS[:3])


def test_records_that_are_not_what_the_table_claims_are_misses(tmp_path, host):
    store = store_at(tmp_path, host)
    store.batch_set(KEYS[:3], [0, 1, 2])
    (p0, o0, n), (_, o1, _) = store.locate(KEYS[0]), store.locate(KEYS[1])
    data = bytearray(p0.read_bytes())
    data[o0:o0 + n], data[o1:o1 + n] = data[o1:o1 + n], data[o0:o0 + n]  # two pages swapped in place
    p0.write_bytes(bytes(data))
    host.buffer[4:7].zero_()
    assert store.batch_get(KEYS[:3], [4, 5, 6]) == [False, False, True]
    assert store.stats()["corrupt"] == 2 and store.batch_exists(KEYS[:1]) == 0


def test_truncated_segment_is_a_miss_then_removed(tmp_path, host):
    store = store_at(tmp_path, host)
    store.batch_set(KEYS[:3], [0, 1, 2])
    path, offset, length = store.locate(KEYS[1])
    os.truncate(path, offset + length // 2)  # the end of the file never reached the disk
    assert store.batch_get(KEYS[:3], [4, 5, 6]) == [True, False, False]
    again = store_at(tmp_path, host)  # no valid table: not a segment
    assert again.stats()["pages"] == 0 and again.stats()["corrupt"] == 1 and not path.exists()


def test_invalid_segment_in_a_read_only_store_is_left_alone_and_counted_once(tmp_path, host, monkeypatch):
    store_at(tmp_path, host).batch_set(KEYS[:1], [0])
    junk = tmp_path / f"{'d' * 32}.kvs"
    junk.write_bytes(b"x" * segment.ALIGN)
    monkeypatch.setattr(FileKVStore, "_probe_writable", lambda self: False)
    ro = store_at(tmp_path, host)
    os.utime(tmp_path, (0, 0))  # the directory "changed": the next miss lists it again
    assert ro.batch_get(KEYS[1:2], [4]) == [False] and read_back(ro, host, KEYS[:1])
    assert ro.stats()["corrupt"] == 1 and junk.exists()


def test_without_holes_eviction_takes_whole_segments(tmp_path, host, monkeypatch):
    monkeypatch.setattr(segment_index, "punch", lambda *_: False)
    per = encoded_size(host.bytes_per_page)
    store = store_at(tmp_path, host, max_bytes=4 * per)
    store.batch_set(KEYS[:2], [0, 1])
    store.batch_set(KEYS[2:4], [2, 3])
    store.batch_set(KEYS[4:5], [4])
    assert [store.batch_exists([k]) for k in KEYS[:5]] == [0, 0, 1, 1, 1] and len(segments(tmp_path)) == 2
    assert store.stats()["bytes"] == 3 * per


def test_calls_after_close_still_store_pages(tmp_path, host):
    store = store_at(tmp_path, host)
    store.close()  # a flush at interpreter exit comes after the I/O threads stopped
    assert store.batch_set(KEYS[:2], [0, 1]) == [True, True] and read_back(store, host, KEYS[:2])


def test_a_listing_that_finds_a_write_before_it_is_indexed_loses_nothing(tmp_path, host, monkeypatch):
    store = store_at(tmp_path, host)
    real_replace = os.replace

    def listed_right_after_the_rename(src, dst):
        real_replace(src, dst)
        store._idx.refresh(force=True)  # another thread's lookup lists the directory in between

    monkeypatch.setattr(os, "replace", listed_right_after_the_rename)
    assert store.batch_set(KEYS[:2], [0, 1]) == [True, True]
    monkeypatch.undo()
    assert len(segments(tmp_path)) == 1 and store.stats()["pages"] == 2 and read_back(store, host, KEYS[:2])


def whole_block_store(tmp_path, direct: bool) -> tuple:
    """A store with two I/O threads over 32 aligned host pages of two blocks each, and 16 keys."""
    if direct and not record_io.probe_direct(str(tmp_path)):
        pytest.skip("no O_DIRECT on this file system")
    host = AlignedHost(32, 2 * segment.ALIGN)
    return store_at(tmp_path, host, direct=direct, io_threads=2), host, [f"{i:064x}" for i in range(1, 17)]


@pytest.mark.parametrize("direct", [False, True])
def test_pages_of_whole_blocks_go_out_in_a_few_vectored_writes(tmp_path, monkeypatch, direct):
    # every call that releases the GIL makes the scheduler's thread wait to take it back: not one per page
    store, host, keys = whole_block_store(tmp_path, direct)
    writes = []
    for name in ("pwrite", "pwritev"):
        def counted(fd, data, offset, real=getattr(os, name), name=name):
            writes.append(name)
            return real(fd, data, offset)
        monkeypatch.setattr(os, name, counted)
    assert store.batch_set(keys, list(range(16))) == [True] * 16
    monkeypatch.undo()
    assert sorted(writes) == ["pwrite", "pwritev", "pwritev"]  # two runs of eight records, then the table
    host.buffer[16:].zero_()
    assert store.batch_get(keys, list(range(16, 32))) == [True] * 16
    assert torch.equal(host.buffer[16:], host.buffer[:16])


@pytest.mark.parametrize("direct", [False, True])
def test_pages_of_whole_blocks_come_back_in_a_few_vectored_reads(tmp_path, monkeypatch, direct):
    # as for writes: one read per run of records back to back, a checksum per page, each verified alone
    store, host, keys = whole_block_store(tmp_path, direct)
    assert store.batch_set(keys, list(range(16))) == [True] * 16
    reads = []
    real = os.preadv
    monkeypatch.setattr(os, "preadv", lambda fd, bufs, offset: reads.append(len(bufs)) or real(fd, bufs, offset))
    host.buffer[16:].zero_()
    assert store.batch_get(keys, list(range(16, 32))) == [True] * 16
    assert sorted(reads) == [8, 8] and torch.equal(host.buffer[16:], host.buffer[:16])
    # one page damaged and one punched out inside the runs: only they are misses
    path, off5, n = store.locate(keys[5])
    data = bytearray(path.read_bytes())
    data[off5 + 7] ^= 0xFF
    path.write_bytes(bytes(data))
    _, off9, _ = store.locate(keys[9])
    fd = os.open(path, os.O_RDWR)
    punched = segment.punch(fd, off9, segment.align_up(n))
    os.close(fd)
    reads.clear()
    got = store.batch_get(keys, list(range(16, 32)))
    want = [True] * 16
    want[5] = False
    want[9] = not punched
    assert got == want and sorted(reads) == [8, 8]
    assert store.stats()["corrupt"] == 1 and store.batch_exists(keys[5:6]) == 0


def test_a_run_that_reads_short_is_verified_record_by_record(tmp_path):
    host = AlignedHost(16, segment.ALIGN)
    store = store_at(tmp_path, host, io_threads=1)
    keys = [f"{i:064x}" for i in range(1, 5)]
    store.batch_set(keys, [0, 1, 2, 3])
    path, offset, _ = store.locate(keys[2])
    os.truncate(path, offset)  # pages 2 and 3 (and the table) never reached the disk
    assert store.batch_get(keys, [8, 9, 10, 11]) == [True, True, False, False]
    assert torch.equal(host.buffer[8:10], host.buffer[0:2])
