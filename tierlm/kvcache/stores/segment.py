"""The on-disk format of the file store's segments, and the raw I/O on them.

A segment holds the pages of one `batch_set` call, written once and never modified except that a removed
page's bytes are punched out (deallocated). Layout, every offset a multiple of `ALIGN` so that the whole
file can be written and read with O_DIRECT:

    record 0 (page payload, zero padded to ALIGN) | record 1 | ... | table | zero pad | trailer

The table has one entry per record (key, offset, length, CRC-32 of the payload); the trailer (the last
`TRAILER.size` bytes) gives the magic, the table's offset and entry count, the file's size and a CRC-32 of
table and trailer fields. A file whose trailer or table does not verify is not a segment; a record whose
bytes do not match its CRC is a damaged page; a record that is a hole was removed.
"""
from __future__ import annotations

import ctypes
import errno
import functools
import mmap
import os
import struct
import threading
from typing import NamedTuple, Optional, Sequence

import numpy as np

from tierlm.kvcache.stores.base import crc32

ALIGN = 4096  # O_DIRECT alignment of offsets, lengths and buffers (the largest logical block in use)
_IOV_MAX = 1024  # buffers per vectored write (Linux's UIO_MAXIOV)
_BOUNCE_MAX = 32 << 20  # bytes per transfer through a thread's bounce buffer (pages that are not whole blocks)
MAGIC = b"TKVSEG01"
ENTRY = struct.Struct("<32sQQI")  # key digest, offset, payload length, CRC-32 of the payload
TRAILER = struct.Struct("<8sIIQQ")  # magic, CRC-32 (table + fields below), entry count, table offset, size
_FALLOC_FL_KEEP_SIZE, _FALLOC_FL_PUNCH_HOLE = 0x01, 0x02


class Entry(NamedTuple):
    key: str
    offset: int
    length: int
    crc: int


class NotASegment(ValueError):
    """The file's trailer or table does not verify (torn, truncated, overwritten or not ours)."""


def align_up(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def plan(lengths: Sequence[int]) -> tuple[list[int], int]:
    """Record offsets for payloads of `lengths`, and the offset of the table after them."""
    offsets, at = [], 0
    for n in lengths:
        offsets.append(at)
        at += align_up(n)
    return offsets, at


def footer(entries: Sequence[Entry], table_offset: int) -> bytes:
    """Table, padding and trailer: the bytes from `table_offset` to the end of the file."""
    table = b"".join(ENTRY.pack(bytes.fromhex(e.key), e.offset, e.length, e.crc) for e in entries)
    size = table_offset + align_up(len(table) + TRAILER.size)
    fields = struct.pack("<IQQ", len(entries), table_offset, size)
    trailer = TRAILER.pack(MAGIC, crc32(fields, crc32(table)), len(entries), table_offset, size)
    return table + bytes(size - table_offset - len(table) - len(trailer)) + trailer


def read_table(fd: int) -> list[Entry]:
    """The entries of the segment open as `fd`; raises NotASegment when it does not verify."""
    size = os.fstat(fd).st_size
    if size < TRAILER.size or size % ALIGN:
        raise NotASegment(f"size {size}")
    magic, crc, count, table_offset, claimed = TRAILER.unpack(_pread_exact(fd, TRAILER.size, size - TRAILER.size))
    table_len = count * ENTRY.size
    if magic != MAGIC or claimed != size or table_offset % ALIGN or table_offset + table_len > size - TRAILER.size:
        raise NotASegment("bad trailer")
    table = _pread_exact(fd, table_len, table_offset)
    if crc32(struct.pack("<IQQ", count, table_offset, size), crc32(table)) != crc:
        raise NotASegment("table checksum mismatch")
    entries, end = [], 0
    for digest, offset, length, rec_crc in ENTRY.iter_unpack(table):
        if offset % ALIGN or offset < end or offset + length > table_offset:
            raise NotASegment("overlapping or misplaced record")
        end = offset + align_up(length)
        entries.append(Entry(digest.hex(), offset, length, rec_crc))
    return entries


def _pread_exact(fd: int, n: int, offset: int) -> bytes:
    data = os.pread(fd, n, offset)
    if len(data) != n:
        raise NotASegment("short read")
    return data


def is_hole(fd: int, offset: int) -> bool:
    """Whether the record at `offset` was punched out (False where the file system cannot tell)."""
    try:
        return os.lseek(fd, offset, os.SEEK_DATA) > offset
    except OSError as e:
        return e.errno == errno.ENXIO  # no data from offset to the end


@functools.lru_cache(maxsize=1)
def _fallocate():
    try:
        fn = ctypes.CDLL(None, use_errno=True).fallocate
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    return fn


def punch(fd: int, offset: int, length: int) -> bool:
    """Deallocate a record's bytes (they read as zeros afterwards); False where the file system cannot."""
    fn = _fallocate()
    if fn is None:
        return False
    if fn(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, align_up(length)) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
        return False
    raise OSError(err, os.strerror(err))


def preallocate(fd: int, size: int) -> None:
    """Reserve the file's blocks in one extent where possible (else just set its size)."""
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as e:
        if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
        os.ftruncate(fd, size)


def address(view: memoryview) -> int:
    return np.frombuffer(view, dtype=np.uint8).ctypes.data if len(view) else 0


def direct_ok(view: memoryview) -> bool:
    """Whether `view` can be the buffer of an O_DIRECT transfer as it is (no bounce copy)."""
    return len(view) % ALIGN == 0 and address(view) % ALIGN == 0


class Scratch(threading.local):
    """A page-aligned buffer per thread, grown on demand: the bounce buffer of O_DIRECT transfers whose
    memory or length is not aligned."""

    buf: Optional[mmap.mmap] = None

    def get(self, n: int) -> memoryview:
        if self.buf is None or len(self.buf) < n:
            self.buf = mmap.mmap(-1, align_up(max(n, 1)))  # the old one goes once no view of it is left
        return memoryview(self.buf)[:n]


def write_records(fd: int, offset: int, payloads: Sequence[memoryview], direct: bool, scratch: Scratch) -> list[int]:
    """Write payloads as consecutive records from `offset`; returns their CRC-32s. Whole blocks (with
    O_DIRECT: aligned in memory too) go out in one vectored write per `_IOV_MAX` of them; anything else is
    gathered, padded, into the bounce buffer and goes out in writes of `_BOUNCE_MAX` bytes or less. Every call
    that releases the GIL makes the engine's scheduler thread wait to take it back, so the writer makes as
    few as it can: a checksum per page and one write per run, not a write per page."""
    crcs = [crc32(p) for p in payloads]
    if any(len(p) % ALIGN for p in payloads) or (direct and not all(direct_ok(p) for p in payloads)):
        for chunk in _chunks([align_up(len(p)) for p in payloads]):
            buf = scratch.get(sum(align_up(len(payloads[i])) for i in chunk))
            at = 0
            for i in chunk:
                n = len(payloads[i])
                buf[at:at + n] = payloads[i]
                buf[at + n:at + align_up(n)] = bytes(align_up(n) - n)
                at += align_up(n)
            if os.pwrite(fd, buf, offset) != len(buf):
                raise OSError(errno.EIO, f"short write at offset {offset}")
            offset += len(buf)
        return crcs
    for i in range(0, len(payloads), _IOV_MAX):
        chunk = payloads[i:i + _IOV_MAX]
        n = sum(len(p) for p in chunk)
        if os.pwritev(fd, chunk, offset) != n:
            raise OSError(errno.EIO, f"short write at offset {offset}")
        offset += n
    return crcs


def _chunks(extents: Sequence[int]) -> list[range]:
    """Consecutive indices cut into the fewest chunks of about `_BOUNCE_MAX` bytes of `extents` or less, of
    about equal size (no short transfer left at the end of a run): each index goes to the chunk its start
    falls in."""
    total = sum(extents)
    if total == 0:
        return [range(len(extents))] if extents else []
    n = -(-total // _BOUNCE_MAX)
    out, start, at, chunk = [], 0, 0, 0
    for i, size in enumerate(extents):
        if i > start and at * n // total != chunk:
            out.append(range(start, i))
            start = i
        if i == start:
            chunk = at * n // total
        at += size
    if start < len(extents):
        out.append(range(start, len(extents)))
    return out


def read_record(fd: int, entry: Entry, dest: memoryview, direct: bool, scratch: Scratch) -> str:
    """Read a record into `dest` and verify it: 'ok', 'gone' (punched out) or 'corrupt'; `dest` is undefined
    unless 'ok'."""
    if len(dest) != entry.length:
        return "corrupt"
    if direct and not direct_ok(dest):
        buf = scratch.get(align_up(entry.length))
        if os.preadv(fd, [buf], entry.offset) < entry.length:
            return "corrupt"
        dest[:] = buf[:entry.length]
    elif os.preadv(fd, [dest], entry.offset) < entry.length:
        return "corrupt"
    return _verdict(fd, entry, dest)


def read_records(fd: int, entries: Sequence[Entry], dests: Sequence[memoryview], direct: bool,
                 scratch: Scratch) -> list[str]:
    """Read and verify records as `read_record` does, one result per record. Records that lie back to back in
    the file come in one vectored read per `_IOV_MAX` of them straight into `dests` where they are whole
    blocks (with O_DIRECT: aligned in memory too), else in one read per `_BOUNCE_MAX` bytes into the bounce
    buffer and are copied out; scattered records, or a chunk that reads short, record by record. As for
    writes, every call that releases the GIL makes the engine's scheduler thread wait to take it back: one
    read per run and a checksum per page, not a read, a checksum and a hand-back per page."""
    if (not all(b.offset == a.offset + align_up(a.length) for a, b in zip(entries, entries[1:]))
            or any(len(d) != e.length for e, d in zip(entries, dests))):
        return [read_record(fd, e, d, direct, scratch) for e, d in zip(entries, dests)]
    if any(e.length % ALIGN for e in entries) or (direct and not all(direct_ok(d) for d in dests)):
        return _read_bounced(fd, entries, dests, direct, scratch)
    out: list[str] = []
    for i in range(0, len(entries), _IOV_MAX):
        chunk, views = entries[i:i + _IOV_MAX], dests[i:i + _IOV_MAX]
        if os.preadv(fd, views, chunk[0].offset) < sum(e.length for e in chunk):
            out += [read_record(fd, e, d, direct, scratch) for e, d in zip(chunk, views)]
            continue
        out += [_verdict(fd, e, d) for e, d in zip(chunk, views)]
    return out


def _read_bounced(fd: int, entries: Sequence[Entry], dests: Sequence[memoryview], direct: bool,
                  scratch: Scratch) -> list[str]:
    """Back-to-back records whose pages are not whole aligned blocks: each chunk of them in one read into the
    bounce buffer, then copied out (a copy is cheaper than a transfer per page)."""
    out: list[str] = []
    for chunk in _chunks([align_up(e.length) for e in entries]):
        first, last = entries[chunk[0]], entries[chunk[-1]]
        buf = scratch.get(last.offset + align_up(last.length) - first.offset)
        if os.preadv(fd, [buf], first.offset) < len(buf):
            out += [read_record(fd, entries[i], dests[i], direct, scratch) for i in chunk]
            continue
        for i in chunk:
            at = entries[i].offset - first.offset
            dests[i][:] = buf[at:at + entries[i].length]
            out.append(_verdict(fd, entries[i], dests[i]))
    return out


def _verdict(fd: int, entry: Entry, dest: memoryview) -> str:
    """'ok' if the bytes read match the record's checksum, else 'gone' (punched out) or 'corrupt'."""
    if crc32(dest) == entry.crc:
        return "ok"
    return "gone" if is_hole(fd, entry.offset) else "corrupt"


def write_footer(fd: int, entries: Sequence[Entry], table_offset: int, direct: bool, scratch: Scratch) -> None:
    data = footer(entries, table_offset)
    view = memoryview(data)
    if direct:
        buf = scratch.get(len(data))
        buf[:] = data
        view = buf
    if os.pwrite(fd, view, table_offset) != len(data):
        raise OSError(errno.EIO, "short write of the segment table")


def open_flags(direct: bool) -> int:
    return getattr(os, "O_DIRECT", 0) if direct else 0


def probe_direct(directory: str) -> bool:
    """Whether files in `directory` take O_DIRECT writes and reads (not every file system does)."""
    if not hasattr(os, "O_DIRECT"):
        return False
    path = os.path.join(directory, f".tmp-direct-probe-{os.getpid()}-{threading.get_ident()}")
    scratch = Scratch()
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_DIRECT, 0o644)
    except OSError:
        return False
    try:
        buf = scratch.get(ALIGN)
        return os.pwrite(fd, buf, 0) == ALIGN and os.preadv(fd, [buf], 0) == ALIGN
    except OSError:
        return False
    finally:
        os.close(fd)
        try:
            os.unlink(path)
        except OSError:
            pass
