"""The file L3 store against a hostile directory: read-only, shared with other engines, stray or grown
files. Read-only is simulated by making the os calls that change the file system fail (chmod cannot, since
the tests may run as root)."""
from __future__ import annotations

import errno
import os
import tracemalloc

import pytest
import torch

from tierlm.kvcache.stores import open_store, segment_index
from tierlm.kvcache.stores.base import encoded_size
from tierlm.kvcache.stores.file import FileKVStore

KEYS = [f"{i:064x}" for i in range(1, 7)]


def filled_store(directory, host, n: int = 2) -> FileKVStore:
    store = FileKVStore(directory, max_bytes=10**6)
    store.attach(host)
    assert store.batch_set(KEYS[:n], list(range(n))) == [True] * n
    return store


def make_read_only(monkeypatch) -> None:
    """From now on every change to the file system fails as on a read-only mount (reads still work)."""
    def refuse(*_, **__):
        raise OSError(errno.EROFS, "Read-only file system")

    real_open = os.open

    def open_for_reading(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            refuse()
        return real_open(path, flags, *args, **kwargs)

    for name in ("utime", "unlink", "replace", "rename", "mkdir"):
        monkeypatch.setattr(os, name, refuse)
    monkeypatch.setattr(os, "open", open_for_reading)


def _not_permitted(*_, **__):
    raise PermissionError(errno.EPERM, "Operation not permitted")


def test_reading_needs_no_write_access(tmp_path, host, monkeypatch):
    store = filled_store(tmp_path, host)
    ref = host.buffer[:2].clone()
    monkeypatch.setattr(os, "utime", _not_permitted)  # pages of another user
    host.buffer[4:6].zero_()
    assert store.batch_get(KEYS[:2], [4, 5]) == [True, True]  # the last-used stamp is best effort
    assert torch.equal(host.buffer[4:6], ref) and store.stats()["errors"] == 0


def test_read_only_store_serves_hits_and_writes_nothing(tmp_path, host, monkeypatch):
    filled_store(tmp_path, host)
    stale = tmp_path / ".tmp-left-by-a-crash"
    stale.write_bytes(b"x")
    os.utime(stale, (0, 0))
    ref = host.buffer[:2].clone()
    make_read_only(monkeypatch)
    store = FileKVStore(tmp_path, max_bytes=1)  # over budget and a stale temp file: nothing may be removed
    store.attach(host)
    assert store.stats()["read_only"] and store.stats()["pages"] == 2
    host.buffer[4:6].zero_()
    assert store.batch_get(KEYS[:2], [4, 5]) == [True, True]
    assert torch.equal(host.buffer[4:6], ref)
    assert store.batch_set(KEYS[:3], [0, 1, 2]) == [True, True, False]  # present pages count as stored
    assert store.stats()["errors"] == 0
    monkeypatch.undo()
    assert stale.exists() and len(list(tmp_path.glob("*.kvs"))) == 1


def test_scan_skips_stray_entries_and_leaves_them_alone(tmp_path, host):
    filled_store(tmp_path, host)
    (segment,) = tmp_path.glob("*.kvs")
    os.symlink(tmp_path / "gone", tmp_path / f"{'a' * 32}.kvs")  # a dangling link named like a segment
    os.symlink(segment, tmp_path / f"{'b' * 32}.kvs")  # a link to a real segment: not indexed twice
    (tmp_path / f"{'c' * 32}.kvs").mkdir()  # a directory named like a segment
    (tmp_path / "README").write_text("x")
    (tmp_path / "00").mkdir()
    (tmp_path / "00" / f"{KEYS[4]}.kvp").write_bytes(b"x")  # a page of another layout
    store = FileKVStore(tmp_path, max_bytes=10**6)
    store.attach(host)
    assert store.stats()["pages"] == 2 and store.stats()["segments"] == 1 and store.stats()["corrupt"] == 0
    assert store.stats()["bytes"] == 2 * encoded_size(host.bytes_per_page)
    assert store.batch_get(KEYS[:5], [4, 5, 6, 7, 3]) == [True, True, False, False, False]
    store.clear()
    assert not segment.exists() and (tmp_path / "README").exists() and (tmp_path / f"{'c' * 32}.kvs").is_dir()
    assert (tmp_path / "00" / f"{KEYS[4]}.kvp").exists() and (tmp_path / f"{'b' * 32}.kvs").is_symlink()


class _Listing(list):
    def __enter__(self):
        return self

    def __exit__(self, *exc) -> bool:
        return False


def test_scan_survives_pages_removed_by_another_engine(tmp_path, host, monkeypatch):
    filled_store(tmp_path, host, n=3)
    real_scandir = os.scandir

    def racing_scandir(path):
        # lists the directory, then another engine evicts what was listed before it is looked at
        with real_scandir(path) as it:
            entries = _Listing(it)
        for e in entries:
            if e.name.endswith(".kvs"):
                os.unlink(e.path)
        return entries

    monkeypatch.setattr(os, "scandir", racing_scandir)
    store = FileKVStore(tmp_path, max_bytes=10**6)
    store.attach(host)
    assert store.stats()["pages"] == 0 and store.batch_get(KEYS[:1], [4]) == [False]


def test_young_temp_files_may_be_another_engines_write(tmp_path, host):
    filled_store(tmp_path, host)
    young, old = tmp_path / ".tmp-young", tmp_path / ".tmp-old"
    young.write_bytes(b"x")
    old.write_bytes(b"x")
    os.utime(old, (0, 0))
    FileKVStore(tmp_path, max_bytes=10**6)
    assert young.exists() and not old.exists()


def test_store_path_that_is_a_file_names_the_flag(tmp_path):
    f = tmp_path / "kv"
    f.write_text("x")
    with pytest.raises(ValueError, match=r"^--kv-store .*not a directory"):
        open_store(f"file://{f}", 10**6, 1.0)


def test_grown_segment_is_not_trusted_nor_read_whole(tmp_path, host):
    filled_store(tmp_path, host, n=1)
    (path,) = tmp_path.glob("*.kvs")
    with open(path, "ab") as f:
        f.write(bytes(4 << 20))  # 4 MiB beyond a segment of a few KiB: its trailer is no longer at the end
    tracemalloc.start()
    try:
        store = FileKVStore(tmp_path, max_bytes=10**6)
        store.attach(host)
        ok = store.batch_get(KEYS[:1], [4])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert ok == [False] and peak < 1 << 20
    assert store.stats()["corrupt"] == 1 and not path.exists()
    assert store.batch_set(KEYS[:1], [0]) == [True] and store.batch_get(KEYS[:1], [4]) == [True]


def _count_listings(monkeypatch) -> list:
    listings = []
    real = segment_index.listdir
    monkeypatch.setattr(segment_index, "listdir", lambda path: listings.append(path) or real(path))
    return listings


def test_a_miss_after_the_engines_own_writes_and_evictions_does_not_list_the_directory(tmp_path, host, monkeypatch):
    # writing through, the directory changes all the time; only another engine's change calls for a listing
    store = FileKVStore(tmp_path, max_bytes=2 * encoded_size(host.bytes_per_page))
    store.attach(host)
    monkeypatch.setattr(segment_index, "_RELIST_SECONDS", 60.0, raising=False)
    listings = _count_listings(monkeypatch)
    for i in range(4):  # one page per segment: from the third on, each write removes the oldest segment
        assert store.batch_set(KEYS[i:i + 1], [i]) == [True]
        assert store.batch_exists(KEYS[5:6]) == 0  # a miss
    assert listings == [] and len(list(tmp_path.glob("*.kvs"))) == 2
    assert [store.batch_exists([k]) for k in KEYS[:4]] == [0, 0, 1, 1]


def test_another_engines_write_between_own_writes_is_found(tmp_path, host, monkeypatch):
    a, b = filled_store(tmp_path, host, n=0), filled_store(tmp_path, host, n=0)
    monkeypatch.setattr(segment_index, "_RELIST_SECONDS", 60.0, raising=False)
    b.batch_set(KEYS[:1], [0])  # b's own write
    seen = os.stat(tmp_path).st_mtime_ns
    a.batch_set(KEYS[1:2], [1])
    os.utime(tmp_path, ns=(seen + 10**9, seen + 10**9))  # a's write shows in the mtime, whatever its granularity
    assert b.batch_exists(KEYS[1:2]) == 1
    b.batch_set(KEYS[2:3], [2])
    seen = os.stat(tmp_path).st_mtime_ns
    a.batch_set(KEYS[3:4], [3])
    os.utime(tmp_path, ns=(seen, seen))  # a's write within the timestamp tick of b's: the mtime shows nothing
    assert b.batch_exists(KEYS[3:4]) == 0  # unseen for at most _RELIST_SECONDS ...
    monkeypatch.setattr(segment_index, "_RELIST_SECONDS", 0.0, raising=False)
    monkeypatch.setattr(segment_index, "_RELIST_UNSURE_SECONDS", 0.0, raising=False)
    assert b.batch_exists(KEYS[3:4]) == 1  # ... then a miss lists the directory


def test_misses_beside_an_untrusted_listing_list_the_directory_at_most_once_per_window(tmp_path, host, monkeypatch):
    # a listing made while the directory had just changed is not trusted; the lookups of every arriving
    # request must not list it again each (a listing holds the lookup thread for every segment file)
    a, b = filled_store(tmp_path, host, n=2), FileKVStore(tmp_path, max_bytes=10**6)
    b.attach(host)
    listings = _count_listings(monkeypatch)
    monkeypatch.setattr(segment_index, "_RELIST_UNSURE_SECONDS", 60.0, raising=False)
    os.utime(tmp_path)  # the directory changed a moment ago ...
    b._idx.refresh(force=True)  # ... so this listing is not trusted
    assert len(listings) == 1 and not b._idx._sure
    assert [b.batch_exists(KEYS[5:6]) for _ in range(20)] == [0] * 20 and len(listings) == 1
    assert b.batch_exists(KEYS[:2]) == 2
    monkeypatch.setattr(segment_index, "_RELIST_UNSURE_SECONDS", 0.0, raising=False)
    assert b.batch_exists(KEYS[5:6]) == 0 and len(listings) == 2  # after the window, a miss lists again
