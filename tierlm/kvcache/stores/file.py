"""`FileKVStore`: the default L3, pages in segment files under `<cache root>/kv/`, with an LRU byte budget.

Each `batch_set` call writes its pages as one segment (`segment.py`): preallocated, written by several
threads with O_DIRECT where the file system takes it, synced, then renamed into place, so a reader sees a
whole segment or none. Reads go straight into the host pages (through an aligned bounce buffer only where
the host memory is not aligned) and are verified against the segment's checksummed table: a damaged
record is a miss and is punched out, a file that is not a valid segment is a miss and is removed.

The index (key -> segment, record) is rebuilt at start-up from the segments' tables alone; LRU order
across restarts is the segments' mtime, which reads refresh (best effort: reading never needs write
access). Several engines may share the directory: a miss re-lists it when it changed, so pages another
engine wrote are found, and pages another engine removed read as misses. Eviction removes single pages
(punching their bytes out; whole segments where the file system cannot punch). A directory the engine
cannot write to is served read-only.
"""
from __future__ import annotations

import concurrent.futures as cf
import errno
import logging
import os
import re
import threading
import time
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from tierlm.kvcache.stores.base import BlobKVStore, encoded_size, page_header, parse_header, submit_or_run
from tierlm.kvcache.stores.segment import (ENTRY, TRAILER, Entry, NotASegment, Scratch, align_up, is_hole,
                                           open_flags, plan, preallocate, probe_direct, punch, read_record,
                                           read_table, write_footer, write_record)

logger = logging.getLogger(__name__)
_SUFFIX = ".kvs"
_TMP = ".tmp-"
_SEGMENT_NAME = re.compile(r"[0-9a-f]{32}" + re.escape(_SUFFIX))
_STALE_TMP_SECONDS = 3600.0  # younger temp files may be another engine's write in progress
_RACY_SECONDS = 1.0  # a listing is trusted only if the directory was already this quiet when it was made
_SEGMENT_BYTES = 256 << 20  # a larger batch is written as several segments
_STAMP_SECONDS = 1.0  # refresh a segment's last-used mtime at most this often


class _Segment:
    __slots__ = ("name", "entries", "live", "adopted", "stamped")

    def __init__(self, name: str, entries: list[Entry], adopted: float) -> None:
        self.name, self.entries, self.live, self.adopted, self.stamped = name, entries, 0, adopted, 0.0


class FileKVStore(BlobKVStore):
    """Pages in `<dir>/<32 hex>.kvs` segments; evicts least recently used pages beyond `max_bytes` (the
    budget counts each page as its encoded size, header included). Only files named like segments are
    indexed, and only segments it indexed are ever removed; anything else in the directory is left alone.

    `direct`: use O_DIRECT (default: where the file system supports it); `io_threads`: parallel record
    reads, writes and checksums per call; `fsync`: sync each segment before it becomes visible."""

    name = "file"

    def __init__(self, directory: str | os.PathLike, max_bytes: int, direct: Optional[bool | str] = None,
                 io_threads: int | str = 4, fsync: bool | str = True) -> None:
        super().__init__()
        self.dir = Path(directory)
        if self.dir.exists() and not self.dir.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(self.dir))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = int(max_bytes)
        self.fsync = _flag(fsync)
        self._mu = threading.Lock()  # index, segments, byte count
        self._list_mu = threading.Lock()  # one directory listing at a time
        self._index: "OrderedDict[str, tuple[_Segment, int]]" = OrderedDict()  # least recently used first
        self._segs: dict[str, _Segment] = {}
        self._bytes = 0
        self._evicted = 0
        self._listed: tuple[int, float] = (-1, 0.0)  # directory mtime_ns and wall time of the last listing
        self._invalid: set[str] = set()  # files named like segments that are not (left alone when read-only)
        self._punch = True  # until the file system says it cannot
        self.read_only = not self._probe_writable()
        want = None if direct is None else _flag(direct)
        self.direct = (want is not False) and not self.read_only and probe_direct(str(self.dir))
        if want and not self.direct:
            logger.warning("File KV store %s: O_DIRECT is not supported here; using buffered I/O", self.dir)
        self._pool = cf.ThreadPoolExecutor(max(1, int(io_threads)), thread_name_prefix="tierlm-kvfile")
        self._scratch = Scratch()
        self._scan()

    # ---- directory ------------------------------------------------------------------------------------------
    def _probe_writable(self) -> bool:
        """Whether a file can be created in the directory (a shared, pre-populated store may be read-only)."""
        probe = self.dir / f"{_TMP}{uuid.uuid4().hex}"
        try:
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
        except OSError as e:
            logger.warning("File KV store %s is not writable (%s); serving its pages read-only", self.dir,
                           e.strerror or e)
            return False
        _unlink(probe)
        return True

    def _scan(self) -> None:
        """Build the index from the segments' tables (least recently used segment first)."""
        now = time.time()
        if not self.read_only:
            for e in _listdir(self.dir):
                try:
                    if e.name.startswith(_TMP) and now - e.stat(follow_symlinks=False).st_mtime > _STALE_TMP_SECONDS:
                        _unlink(e.path)
                except OSError:
                    continue
        self._refresh(force=True)
        self._evict_over_budget()
        logger.info("File KV store %s: %d pages in %d segments, %.1f MiB%s%s", self.dir, len(self._index),
                    len(self._segs), self._bytes / 2**20, ", O_DIRECT" if self.direct else "",
                    " (read-only)" if self.read_only else "")

    def _refresh(self, force: bool = False) -> None:
        """Adopt segments other engines wrote and forget those they removed, if the directory changed."""
        with self._list_mu:
            try:
                mtime = os.stat(self.dir).st_mtime_ns
            except OSError:
                return
            seen, listed_at = self._listed
            if not force and mtime == seen and listed_at - mtime / 1e9 > _RACY_SECONDS:
                return
            listed_at = time.time()
            names = {e.name for e in _listdir(self.dir)
                     if _SEGMENT_NAME.fullmatch(e.name) and _is_file(e)} - self._invalid
            self._listed = (mtime, listed_at)
            with self._mu:
                gone = [s for n, s in self._segs.items() if n not in names and s.adopted < listed_at]
                for seg in gone:
                    self._forget(seg)
                new = names - self._segs.keys()
            loaded = [s for s in (self._load(n) for n in new) if s is not None]
            loaded.sort(key=lambda s: s[1])
            with self._mu:
                for seg, _, alive in loaded:
                    self._adopt(seg, alive)

    def _load(self, name: str) -> Optional[tuple[_Segment, float, list[int]]]:
        """A segment's table, its mtime and the records not punched out; None if it vanished or is not a
        valid segment (which is removed)."""
        path = self.dir / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:  # removed by another engine meanwhile, a link, no permission
            return None
        try:
            entries = read_table(fd)
            alive = [i for i, e in enumerate(entries) if not is_hole(fd, e.offset)]
            mtime = os.fstat(fd).st_mtime
        except NotASegment as e:
            self._count(corrupt=1)
            logger.warning("File KV store %s: %s is not a valid segment (%s); ignoring%s", self.dir, name, e,
                           "" if self.read_only else " and removing it")
            if self.read_only:
                self._invalid.add(name)
            else:
                _unlink(path)
            return None
        except OSError:
            return None
        finally:
            os.close(fd)
        return _Segment(name, entries, time.time()), mtime, alive

    # ---- index (callers hold self._mu) -----------------------------------------------------------------------
    def _adopt(self, seg: _Segment, alive: Sequence[int]) -> None:
        """Index a segment's live records as most recently used. A key stored twice keeps the copy in the
        segment whose name sorts first (every engine sharing the directory agrees); the other is removed."""
        self._segs[seg.name] = seg
        losers = []
        for i in alive:
            key = seg.entries[i].key
            held = self._index.get(key)
            if held is not None and held[0].name < seg.name:
                losers.append((seg, i))
                continue
            if held is not None:
                losers.append(self._unindex(key))
            self._index[key] = (seg, i)
            seg.live += 1
            self._bytes += encoded_size(seg.entries[i].length)
        for s, i in losers:
            self._discard(s, i)
        if not seg.live:
            self._discard(seg, None)

    def _unindex(self, key: str) -> tuple[_Segment, int]:
        seg, i = self._index.pop(key)
        seg.live -= 1
        self._bytes -= encoded_size(seg.entries[i].length)
        return seg, i

    def _forget(self, seg: _Segment) -> None:
        """Unindex every page of a segment (gone from the directory, or removed as a whole)."""
        for e in seg.entries:
            if self._index.get(e.key, (None,))[0] is seg:
                self._unindex(e.key)
        self._segs.pop(seg.name, None)

    def _discard(self, seg: _Segment, i: Optional[int]) -> None:
        """Remove the bytes of unindexed record `i` from disk: the whole segment once nothing in it is
        indexed (or where the file system cannot punch holes, taking its other pages along)."""
        if self.read_only:
            return
        path = self.dir / seg.name
        if seg.live and i is not None and self._punch:
            try:
                fd = os.open(path, os.O_WRONLY)
            except OSError:  # removed by another engine meanwhile
                return
            try:
                if punch(fd, seg.entries[i].offset, seg.entries[i].length):
                    return
                self._punch = False
                logger.info("File KV store %s: the file system cannot punch holes; removing whole segments",
                            self.dir)
            except OSError as e:
                logger.debug("File KV store: cannot punch a page out of %s (%s)", path, e)
                return
            finally:
                os.close(fd)
        if seg.live and i is None:
            return
        self._forget(seg)
        _unlink(path)

    def _evict_over_budget(self) -> None:
        if self.read_only:  # nothing can be removed; the budget is the owner's business
            return
        while self._bytes > self.max_bytes and self._index:
            seg, i = self._unindex(next(iter(self._index)))
            self._evicted += 1
            self._discard(seg, i)

    def _locate(self, keys: Sequence[str], refresh: bool) -> list[Optional[tuple[_Segment, int]]]:
        with self._mu:
            found = [self._index.get(k) for k in keys]
        if refresh and not all(found):
            self._refresh()
            with self._mu:
                found = [self._index.get(k) for k in keys]
        return found

    def locate(self, key: str) -> Optional[tuple[Path, int, int]]:
        """(segment file, offset, length) of a stored page's bytes, for tools and tests."""
        held = self._locate([key], refresh=True)[0]
        return None if held is None else (self.dir / held[0].name, held[0].entries[held[1]].offset,
                                           held[0].entries[held[1]].length)

    # ---- pages ---------------------------------------------------------------------------------------------
    def batch_get(self, keys: Sequence[str], host_pages: Sequence[int]) -> list[bool]:
        self._count(get_calls=1)
        t0 = time.perf_counter()
        found = self._locate(keys, refresh=True)
        fds: dict[str, Optional[int]] = {}
        jobs: dict[int, cf.Future] = {}
        direct = self.direct
        try:
            for j, (held, page) in enumerate(zip(found, host_pages)):
                if held is None:
                    continue
                seg, i = held
                if seg.name not in fds:
                    fds[seg.name] = self._open_for_read(seg, direct)
                if fds[seg.name] is not None:
                    jobs[j] = self._submit(read_record, fds[seg.name], seg.entries[i],
                                           self.host.page_bytes(page), direct, self._scratch)
            cf.wait(jobs.values())
        finally:
            for fd in fds.values():
                if fd is not None:
                    os.close(fd)
        ok, nbytes, corrupt, gone = [False] * len(keys), 0, [], []
        for j, fut in jobs.items():
            err = fut.exception()
            if err is not None:
                self._io_failed("read", err)
                continue
            seg, i = found[j]
            result = fut.result()
            if result == "ok":
                ok[j] = True
                nbytes += encoded_size(seg.entries[i].length)
            elif result == "gone":
                gone.append(keys[j])
            else:
                corrupt.append(keys[j])
                logger.warning("KV store file: page %s is corrupt (%s); treating it as a miss%s", keys[j][:16],
                               seg.name, "" if self.read_only else " and removing it")
        self._after_read(keys, found, ok, corrupt, gone)
        self._count(hits=sum(ok), misses=len(keys) - sum(ok) - len(corrupt), corrupt=len(corrupt),
                    bytes_read=nbytes, read_seconds=time.perf_counter() - t0)
        return ok

    def _submit(self, fn: Callable, *args: Any) -> cf.Future:
        return submit_or_run(self._pool, fn, *args)

    def _open_for_read(self, seg: _Segment, direct: bool) -> Optional[int]:
        try:
            return os.open(self.dir / seg.name, os.O_RDONLY | open_flags(direct))
        except FileNotFoundError:  # removed by another engine
            with self._mu:
                if self._segs.get(seg.name) is seg:
                    self._forget(seg)
        except OSError as e:
            self._io_failed("open", e)
        return None

    def _io_failed(self, what: str, e: BaseException) -> None:
        if isinstance(e, OSError) and e.errno == errno.EINVAL:
            self._no_direct(e)
        self._error(what, e)

    def _no_direct(self, e: OSError) -> None:
        if self.direct:  # the file system took the flag but not the transfers
            self.direct = False
            logger.warning("File KV store %s: O_DIRECT transfers fail (%s); using buffered I/O", self.dir, e)

    def _after_read(self, keys: Sequence[str], found: list, ok: list[bool], corrupt: list[str],
                    gone: list[str]) -> None:
        """LRU order and last-used stamps of the hits; unindex pages that are gone; remove damaged ones."""
        now = time.time()
        stamp = []
        with self._mu:
            for key, held, hit in zip(keys, found, ok):
                if hit and self._index.get(key) == held:
                    self._index.move_to_end(key)
                    if now - held[0].stamped > _STAMP_SECONDS:
                        held[0].stamped = now
                        stamp.append(held[0].name)
            for key in gone + corrupt:
                if key in self._index:
                    seg, i = self._unindex(key)
                    if key in corrupt:
                        self._discard(seg, i)
        for name in dict.fromkeys(stamp):
            try:
                os.utime(self.dir / name)
            except OSError:  # not ours to stamp (read-only store, another user's file): LRU order suffers only
                pass

    def batch_set(self, keys: Sequence[str], host_pages: Sequence[int]) -> list[bool]:
        self._count(set_calls=1)
        if not keys:
            return []
        t0 = time.perf_counter()
        present = [h is not None for h in self._locate(keys, refresh=False)]
        todo = {} if self.read_only else {k: i for i, (k, p) in enumerate(zip(keys, present)) if not p}
        try:
            self._write([(k, self.host.page_bytes(host_pages[i]), None) for k, i in todo.items()])
        except Exception as e:  # noqa: BLE001 - a failed write is a miss later, never an error upstream
            self._error("set", e)
            return [False] * len(keys)
        ok = [p or k in todo for k, p in zip(keys, present)]
        self._count(pages_written=len(todo), bytes_written=sum(encoded_size(self.host.bytes_per_page) for _ in todo),
                    write_seconds=time.perf_counter() - t0)
        return ok

    def _write(self, items: Sequence[tuple[str, memoryview, Optional[int]]]) -> None:
        """Write (key, payload, crc or None to compute it) records as segments of at most _SEGMENT_BYTES."""
        start, size = 0, 0
        for j, (_, payload, _) in enumerate(items):
            if size and size + len(payload) > _SEGMENT_BYTES:
                self._write_segment(items[start:j])
                start, size = j, 0
            size += align_up(len(payload))
        if start < len(items):
            self._write_segment(items[start:])

    def _write_segment(self, items: Sequence[tuple[str, memoryview, Optional[int]]]) -> None:
        offsets, table_offset = plan([len(p) for _, p, _ in items])
        name = uuid.uuid4().hex + _SUFFIX
        tmp = self.dir / f"{_TMP}{name}"
        direct = self.direct
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | open_flags(direct), 0o644)
        try:
            preallocate(fd, table_offset + align_up(len(items) * ENTRY.size + TRAILER.size))
            jobs = [self._submit(write_record, fd, off, payload, direct, self._scratch)
                    for (_, payload, _), off in zip(items, offsets)]
            cf.wait(jobs)  # every job is done with the descriptor before it can be closed
            crcs = [j.result() for j in jobs]
            entries = [Entry(k, off, len(p), crc if given is None else given)
                       for (k, p, given), off, crc in zip(items, offsets, crcs)]
            write_footer(fd, entries, table_offset, direct, self._scratch)
            if self.fsync:
                os.fdatasync(fd)
        except BaseException as e:
            os.close(fd)
            _unlink(tmp)
            if isinstance(e, OSError) and e.errno == errno.EINVAL and direct:
                self._no_direct(e)
                return self._write_segment(items)  # once more, buffered
            raise
        os.close(fd)
        os.replace(tmp, self.dir / name)
        with self._mu:
            self._adopt(_Segment(name, entries, time.time()), range(len(entries)))
            self._evict_over_budget()

    # ---- bytes (the BlobKVStore contract, for callers that move encoded pages) ------------------------------
    def _exists_many(self, keys: Sequence[str]) -> list[bool]:
        return [h is not None for h in self._locate(keys, refresh=True)]

    def _read_many(self, keys: Sequence[str]) -> list[Optional[bytes]]:
        out: list[Optional[bytes]] = []
        for held in self._locate(keys, refresh=True):
            if held is None:
                out.append(None)
                continue
            e = held[0].entries[held[1]]
            try:
                fd = os.open(self.dir / held[0].name, os.O_RDONLY)
            except FileNotFoundError:
                out.append(None)
                continue
            try:
                out.append(page_header(e.key, e.length, e.crc) + os.pread(fd, e.length, e.offset))
            finally:
                os.close(fd)
        return out

    def _write_many(self, keys: Sequence[str], blobs: Sequence[bytes]) -> list[bool]:
        items = []
        for key, blob in zip(keys, blobs):
            crc = parse_header(blob)[2]
            items.append((key, memoryview(blob)[encoded_size(0):], crc))
        self._write(items)
        return [True] * len(keys)

    def _delete_many(self, keys: Sequence[str]) -> None:
        with self._mu:
            for key in keys:
                if key in self._index:
                    self._discard(*self._unindex(key))

    def clear(self) -> None:
        with self._mu:
            for seg in list(self._segs.values()):
                self._forget(seg)
                if not self.read_only:
                    _unlink(self.dir / seg.name)

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def stats(self) -> dict:
        with self._mu:
            extra = {"dir": str(self.dir), "pages": len(self._index), "segments": len(self._segs),
                     "bytes": self._bytes, "max_bytes": self.max_bytes, "evicted_pages": self._evicted,
                     "read_only": self.read_only, "direct_io": self.direct}
        return {**super().stats(), **extra}


def _flag(value: bool | str) -> bool:
    """A boolean option that may come from a `module:Class?k=v` URL as a string."""
    if isinstance(value, str):
        if value.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
            raise ValueError(f"expected a boolean, got {value!r}")
        return value.lower() in ("1", "true", "yes", "on")
    return bool(value)


def _is_file(entry: os.DirEntry) -> bool:
    try:
        return entry.is_file(follow_symlinks=False)
    except OSError:
        return False


def _listdir(path: str | os.PathLike) -> list[os.DirEntry]:
    """The entries of `path`, or none if it vanished or cannot be listed."""
    try:
        with os.scandir(path) as it:
            return list(it)
    except OSError:
        return []


def _unlink(path: str | os.PathLike) -> None:
    """Remove `path` if possible: a file already gone or one we may not remove is not an error here."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        logger.debug("File KV store: cannot remove %s (%s)", path, e)
