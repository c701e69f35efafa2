"""`FileKVStore`: the default L3, pages in segment files under `<cache root>/kv/`, with an LRU byte budget.

Each `batch_set` call writes its pages as one segment (`segment.py`): preallocated, written by several
threads with O_DIRECT where the file system takes it, synced, then renamed into place, so a reader sees a
whole segment or none. Reads go straight into the host pages (through an aligned bounce buffer only where a
page's memory or length does not meet O_DIRECT's alignment: `record_io.py`) and are verified against the
segment's checksummed table: a damaged record is a miss and is punched out, a file that is not a valid
segment is a miss and is removed.

The index (key -> segment, record) is rebuilt at start-up from the segments' tables alone; LRU order
across restarts is the segments' mtime, which reads refresh (best effort: reading never needs write
access). Several engines may share the directory: a miss re-lists it when another engine changed it, so
pages another engine wrote are found, and pages another engine removed read as misses. Eviction removes
single pages (punching their bytes out; whole segments where the file system cannot punch). A directory
the engine cannot write to is served read-only.
"""
from __future__ import annotations

import concurrent.futures as cf
import errno
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from tierlm.kvcache.futures import submit_or_run
from tierlm.kvcache.stores.base import BlobKVStore, encoded_size, page_header, parse_header
from tierlm.kvcache.stores.dir_ops import unlink
from tierlm.kvcache.stores.record_io import (Scratch, open_flags, probe_direct, read_records, write_footer,
                                             write_records)
from tierlm.kvcache.stores.segment import ALIGN, ENTRY, TRAILER, Entry, align_up, plan, preallocate
from tierlm.kvcache.stores.segment_index import SUFFIX, TMP, Segment, SegmentIndex

logger = logging.getLogger(__name__)
_SEGMENT_BYTES = 256 << 20  # a larger batch is written as several segments


class FileKVStore(BlobKVStore):
    """Pages in `<dir>/<32 hex>.kvs` segments; evicts least recently used pages beyond `max_bytes` (the
    budget counts each page as its encoded size, header included). Only files named like segments are
    indexed, and only segments it indexed are ever removed; anything else in the directory is left alone.

    `direct`: use O_DIRECT (default: where the file system supports it); `io_threads`: parallel record
    reads per call, and runs of records written (with their checksums) in parallel per segment; `fsync`:
    sync each segment before it becomes visible."""

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
        self.read_only = not self._probe_writable()
        want = None if direct is None else _flag(direct)
        probe = probe_direct(str(self.dir)) if (want is not False) and not self.read_only else 0
        self.direct = probe > 0
        # O_DIRECT's alignment of buffers and lengths: 512 lets an MLA model's pages (a multiple of 512 bytes,
        # not of 4 KiB) move in place
        self.dio_align = probe or ALIGN
        if want and not self.direct:
            logger.warning("File KV store %s: O_DIRECT is not supported here; using buffered I/O", self.dir)
        self._io_threads = max(1, int(io_threads))
        self._pool = cf.ThreadPoolExecutor(self._io_threads, thread_name_prefix="tierlm-kvfile")
        self._scratch = Scratch()
        self._idx = SegmentIndex(self.dir, self.max_bytes, self.read_only, lambda: self._count(corrupt=1))
        self._idx.scan()
        st = self._idx.stats()
        logger.info("File KV store %s: %d pages in %d segments, %.1f MiB%s%s", self.dir, st["pages"],
                    st["segments"], st["bytes"] / 2**20, ", O_DIRECT" if self.direct else "",
                    " (read-only)" if self.read_only else "")

    def _probe_writable(self) -> bool:
        """Whether a file can be created in the directory (a shared, pre-populated store may be read-only)."""
        probe = self.dir / f"{TMP}{uuid.uuid4().hex}"
        try:
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
        except OSError as e:
            logger.warning("File KV store %s is not writable (%s); serving its pages read-only", self.dir,
                           e.strerror or e)
            return False
        unlink(probe)
        return True

    def locate(self, key: str) -> Optional[tuple[Path, int, int]]:
        """(segment file, offset, length) of a stored page's bytes, for tools and tests."""
        return self._idx.locate(key)

    # ---- pages ---------------------------------------------------------------------------------------------
    def batch_get(self, keys: Sequence[str], host_pages: Sequence[int]) -> list[bool]:
        self._count(get_calls=1)
        t0 = time.perf_counter()
        try:
            found = self._idx.find(keys, refresh=True)
        except Exception as e:  # noqa: BLE001 - outage = miss
            self._error("get", e)
            return [False] * len(keys)
        fds: dict[str, Optional[int]] = {}
        jobs: list[tuple[list[int], cf.Future]] = []  # (indices into keys, the job reading them)
        try:
            for seg, items in self._by_segment(found, host_pages).items():
                fds[seg.name] = fd = self._open_for_read(seg, self.direct)
                if fd is None:
                    continue
                for piece in self._read_pieces(items):
                    jobs.append(([j for j, _, _ in piece],
                                 self._submit(read_records, fd, [e for _, e, _ in piece], [d for _, _, d in piece],
                                              self.direct, self._scratch, self.dio_align)))
            cf.wait([f for _, f in jobs])
        finally:
            for fd in fds.values():
                if fd is not None:
                    os.close(fd)
        ok, nbytes, corrupt, gone = [False] * len(keys), 0, [], []
        for idxs, fut in jobs:
            err = fut.exception()
            if err is not None:
                self._io_failed("read", err)
                continue
            for j, result in zip(idxs, fut.result()):
                seg, i = found[j]
                if result == "ok":
                    ok[j] = True
                    nbytes += encoded_size(seg.entries[i].length)
                elif result == "gone":
                    gone.append(keys[j])
                else:
                    corrupt.append(keys[j])
                    logger.warning("KV store file: page %s is corrupt (%s); treating it as a miss%s", keys[j][:16],
                                   seg.name, "" if self.read_only else " and removing it")
        self._idx.touch([(k, h) for k, h, hit in zip(keys, found, ok) if hit])
        self._idx.remove(gone, keep_bytes=True)
        self._idx.remove(corrupt)
        self._count(hits=sum(ok), misses=len(keys) - sum(ok) - len(corrupt), corrupt=len(corrupt),
                    bytes_read=nbytes, read_seconds=time.perf_counter() - t0)
        return ok

    def _by_segment(self, found: Sequence, host_pages: Sequence[int]) -> dict:
        """The held pages grouped by segment: segment -> [(index, entry, destination view)] in file order."""
        groups: dict = {}
        for j, (held, page) in enumerate(zip(found, host_pages)):
            if held is not None:
                seg, i = held
                groups.setdefault(seg, []).append((j, seg.entries[i], self.host.page_bytes(page)))
        for items in groups.values():
            items.sort(key=lambda t: t[1].offset)
        return groups

    def _read_pieces(self, items: list) -> list[list]:
        """Cut a segment's reads (in file order) into runs of records back to back, each run into pieces of
        at most an even share of the I/O threads, so that a long run still reads in parallel."""
        share = -(-len(items) // self._io_threads)
        pieces: list[list] = [[]]
        for item in items:
            last = pieces[-1]
            if last and (len(last) >= share or item[1].offset != last[-1][1].offset + align_up(last[-1][1].length)):
                pieces.append([])
            pieces[-1].append(item)
        return pieces

    def _submit(self, fn: Callable, *args: Any) -> cf.Future:
        return submit_or_run(self._pool, fn, *args)

    def _open_for_read(self, seg: Segment, direct: bool) -> Optional[int]:
        try:
            return os.open(self.dir / seg.name, os.O_RDONLY | open_flags(direct))
        except FileNotFoundError:  # removed by another engine
            with self._idx.mu:
                if self._idx.segs.get(seg.name) is seg:
                    self._idx.forget(seg)
        except OSError as e:
            self._io_failed("open", e)
        return None

    def _io_failed(self, what: str, e: BaseException) -> None:
        if isinstance(e, OSError) and e.errno == errno.EINVAL:
            self._no_direct(e)
        self._error(what, e)

    def _no_direct(self, e: OSError) -> None:
        if self.direct and self.dio_align < ALIGN:  # the probe's small transfers went through, these did not
            logger.warning("File KV store %s: O_DIRECT transfers aligned to %d bytes fail (%s); aligning them to %d",
                           self.dir, self.dio_align, e, ALIGN)
            self.dio_align = ALIGN
        elif self.direct:  # the file system took the flag but not the transfers
            self.direct = False
            logger.warning("File KV store %s: O_DIRECT transfers fail (%s); using buffered I/O", self.dir, e)

    def _present_for_set(self, keys: Sequence[str]) -> list[bool]:
        return [h is not None for h in self._idx.find(keys, refresh=False)]

    def _store_pages(self, keys: Sequence[str], host_pages: Sequence[int]) -> list[bool]:
        unique = dict(zip(keys, host_pages))  # a key twice in one call is written once
        self._write([(k, self.host.page_bytes(p), None) for k, p in unique.items()])
        return [True] * len(keys)

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
        name = uuid.uuid4().hex + SUFFIX
        tmp = self.dir / f"{TMP}{name}"
        direct = self.direct
        fd = self._idx.changing(os.open, tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | open_flags(direct), 0o644)
        try:
            preallocate(fd, table_offset + align_up(len(items) * ENTRY.size + TRAILER.size))
            # one job per run of consecutive records, at most one run per I/O thread (not one per page)
            runs = min(self._io_threads, len(items))
            cuts = [len(items) * r // runs for r in range(runs + 1)]
            jobs = [self._submit(write_records, fd, offsets[a], [p for _, p, _ in items[a:b]], direct, self._scratch,
                                 self.dio_align)
                    for a, b in zip(cuts, cuts[1:])]
            cf.wait(jobs)  # every job is done with the descriptor before it can be closed
            crcs = [crc for j in jobs for crc in j.result()]
            entries = [Entry(k, off, len(p), crc if given is None else given)
                       for (k, p, given), off, crc in zip(items, offsets, crcs)]
            write_footer(fd, entries, table_offset, direct, self._scratch)
            if self.fsync:
                os.fdatasync(fd)
        except BaseException as e:
            os.close(fd)
            self._idx.changing(unlink, tmp)
            if isinstance(e, OSError) and e.errno == errno.EINVAL and direct:
                self._no_direct(e)
                return self._write_segment(items)  # once more, aligned to 4 KiB or buffered
            raise
        os.close(fd)
        try:
            self._idx.changing(os.replace, tmp, self.dir / name)
        except BaseException:
            self._idx.changing(unlink, tmp)
            raise
        with self._idx.mu:
            self._idx.adopt(Segment(name, entries, time.time()), range(len(entries)))
            self._idx.evict_over_budget()

    # ---- bytes (the BlobKVStore contract, for callers that move encoded pages) ------------------------------
    def _exists_many(self, keys: Sequence[str]) -> list[bool]:
        return [h is not None for h in self._idx.find(keys, refresh=True)]

    def _read_many(self, keys: Sequence[str]) -> list[Optional[bytes]]:
        out: list[Optional[bytes]] = []
        for held in self._idx.find(keys, refresh=True):
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
        self._idx.remove(keys)

    def clear(self) -> None:
        self._idx.clear()

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def stats(self) -> dict:
        return {**super().stats(), "dir": str(self.dir), **self._idx.stats(), "read_only": self.read_only,
                "direct_io": self.direct, "direct_io_align": self.dio_align if self.direct else None}


def _flag(value: bool | str) -> bool:
    """A boolean option that may come from a `module:Class?k=v` URL as a string."""
    if isinstance(value, str):
        if value.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
            raise ValueError(f"expected a boolean, got {value!r}")
        return value.lower() in ("1", "true", "yes", "on")
    return bool(value)


