"""The file store's transfers of records (pages) to and from segment files, with O_DIRECT or buffered.

Records lie at `ALIGN` offsets, each zero padded to the next one (`segment.py`). With O_DIRECT the kernel asks
every buffer's address and length, and every file offset, to be a multiple of the device's transfer
alignment (`probe_dio_align`: 512 bytes on most block devices, else 4 KiB). Records whose pages meet it move in
place, a run of back-to-back records in one vectored call, the pads between them read into (or written from)
a small per-thread buffer; that covers an MLA model's pages, which are a multiple of 512 bytes but not of
4 KiB. Other pages go through a per-thread bounce buffer, a run of them per transfer of up to `_BOUNCE_MAX`
bytes. Every call that releases the GIL makes the engine's scheduler thread wait to take it back, so the
store makes as few as it can: one per run, and a checksum per page.
"""
from __future__ import annotations

import errno
import mmap
import os
import threading
from typing import Optional, Sequence

import numpy as np

from tierlm.kvcache.stores.base import crc32
from tierlm.kvcache.stores.segment import ALIGN, Entry, align_up, footer, is_hole

_IOV_MAX = 1024  # buffers per vectored call (Linux's UIO_MAXIOV)
_BOUNCE_MAX = 32 << 20  # bytes per transfer through a thread's bounce buffer


def address(view: memoryview) -> int:
    return np.frombuffer(view, dtype=np.uint8).ctypes.data if len(view) else 0


def direct_ok(view: memoryview, align: int = ALIGN) -> bool:
    """Whether `view` can be the buffer of an O_DIRECT transfer as it is (no bounce copy)."""
    return len(view) % align == 0 and address(view) % align == 0


class Scratch(threading.local):
    """Per-thread page-aligned buffers, grown on demand: the bounce buffer of O_DIRECT transfers whose memory
    or length is not aligned (`get`), and the pads between records moved in place (`pad`: read into, or
    zeros to write)."""

    buf: Optional[mmap.mmap] = None
    pads: Optional[mmap.mmap] = None  # [ALIGN bytes read into | ALIGN zero bytes]

    def get(self, n: int) -> memoryview:
        if self.buf is None or len(self.buf) < n:
            self.buf = mmap.mmap(-1, align_up(max(n, 1)))  # the old one goes once no view of it is left
        return memoryview(self.buf)[:n]

    def pad(self, n: int, zeros: bool) -> memoryview:
        """`n` < ALIGN bytes: a view to read a pad into, or zeros to write one from."""
        if self.pads is None:
            self.pads = mmap.mmap(-1, 2 * ALIGN)
        start = ALIGN if zeros else 0
        return memoryview(self.pads)[start:start + n]


def _in_place(lengths: Sequence[int], views: Sequence[memoryview], direct: bool, align: int) -> bool:
    """Whether records of `lengths` can move straight between the file and `views`."""
    return all(len(v) == n for v, n in zip(views, lengths)) and (not direct or all(direct_ok(v, align) for v in views))


def _runs_iov(views: Sequence[memoryview], scratch: Scratch, zeros: bool) -> list[tuple[int, int, list]]:
    """The vectored calls that move `views` as back-to-back records, as (first index, count, buffers): each
    view followed by its pad up to the next record (none after the last), at most `_IOV_MAX` buffers a call."""
    calls: list[tuple[int, int, list]] = []
    for i, v in enumerate(views):
        gap = align_up(len(v)) - len(v) if i + 1 < len(views) else 0
        if not calls or len(calls[-1][2]) + 1 + bool(gap) > _IOV_MAX:
            calls.append((i, 0, []))
        first, count, iov = calls[-1]
        iov.append(v)
        if gap:
            iov.append(scratch.pad(gap, zeros))
        calls[-1] = (first, count + 1, iov)
    return calls


def write_records(fd: int, offset: int, payloads: Sequence[memoryview], direct: bool, scratch: Scratch,
                  align: int = ALIGN) -> list[int]:
    """Write payloads as consecutive records from `offset` (`align`: O_DIRECT's transfer alignment); returns
    their CRC-32s (computed here, so that checksumming runs on the I/O threads in parallel)."""
    crcs = [crc32(p) for p in payloads]
    if not _in_place([len(p) for p in payloads], payloads, direct, align):
        for chunk in _chunks([align_up(len(p)) for p in payloads]):
            buf = scratch.get(sum(align_up(len(payloads[i])) for i in chunk))
            at = 0
            for i in chunk:
                n = len(payloads[i])
                buf[at:at + n] = payloads[i]
                buf[at + n:at + align_up(n)] = scratch.pad(align_up(n) - n, zeros=True)
                at += align_up(n)
            _write_all(fd, [buf], offset)
            offset += len(buf)
        return crcs
    for _, _, iov in _runs_iov(payloads, scratch, zeros=True):  # no pad after the last: preallocated zeros
        offset += _write_all(fd, iov, offset)
    return crcs


def _write_all(fd: int, iov: list[memoryview], offset: int) -> int:
    n = sum(len(v) for v in iov)
    if os.pwritev(fd, iov, offset) != n:
        raise OSError(errno.EIO, f"short write at offset {offset}")
    return align_up(n)


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


def read_record(fd: int, entry: Entry, dest: memoryview, direct: bool, scratch: Scratch, align: int = ALIGN) -> str:
    """Read a record into `dest` and verify it: 'ok', 'gone' (punched out) or 'corrupt'; `dest` is undefined
    unless 'ok'."""
    if len(dest) != entry.length:
        return "corrupt"
    if direct and not direct_ok(dest, align):
        buf = scratch.get(align_up(entry.length))
        if os.preadv(fd, [buf], entry.offset) < entry.length:
            return "corrupt"
        dest[:] = buf[:entry.length]
    elif os.preadv(fd, [dest], entry.offset) < entry.length:
        return "corrupt"
    return _verdict(fd, entry, dest)


def read_records(fd: int, entries: Sequence[Entry], dests: Sequence[memoryview], direct: bool,
                 scratch: Scratch, align: int = ALIGN) -> list[str]:
    """Read and verify records as `read_record` does, one result per record. Records back to back in the file
    come in one vectored call per `_IOV_MAX` buffers where they can move in place, else through the bounce
    buffer a chunk at a time; scattered records, or a call that reads short, record by record."""
    if (not all(b.offset == a.offset + align_up(a.length) for a, b in zip(entries, entries[1:]))
            or any(len(d) != e.length for e, d in zip(entries, dests))):
        return [read_record(fd, e, d, direct, scratch, align) for e, d in zip(entries, dests)]
    if not _in_place([e.length for e in entries], dests, direct, align):
        return _read_bounced(fd, entries, dests, direct, scratch, align)
    out: list[str] = []
    for first, count, iov in _runs_iov(dests, scratch, zeros=False):
        chunk, views = entries[first:first + count], dests[first:first + count]
        if os.preadv(fd, iov, chunk[0].offset) < sum(len(v) for v in iov):
            out += [read_record(fd, e, d, direct, scratch, align) for e, d in zip(chunk, views)]
        else:
            out += [_verdict(fd, e, d) for e, d in zip(chunk, views)]
    return out


def _read_bounced(fd: int, entries: Sequence[Entry], dests: Sequence[memoryview], direct: bool,
                  scratch: Scratch, align: int) -> list[str]:
    """Back-to-back records that cannot move in place: each chunk of them in one read into the bounce buffer,
    then copied out (a copy is cheaper than a transfer per page)."""
    out: list[str] = []
    for chunk in _chunks([align_up(e.length) for e in entries]):
        first, last = entries[chunk[0]], entries[chunk[-1]]
        buf = scratch.get(last.offset + align_up(last.length) - first.offset)
        if os.preadv(fd, [buf], first.offset) < len(buf):
            out += [read_record(fd, entries[i], dests[i], direct, scratch, align) for i in chunk]
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


def probe_direct(directory: str) -> int:
    """Whether files in `directory` take O_DIRECT transfers (not every file system does), as the alignment
    they need of buffers, lengths and offsets: 0 where they do not, 512 where the device takes 512-byte
    transfers into memory aligned only that much (most block devices), else `ALIGN`."""
    if not hasattr(os, "O_DIRECT"):
        return 0
    path = os.path.join(directory, f".tmp-direct-probe-{os.getpid()}-{threading.get_ident()}")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_DIRECT, 0o644)
    except OSError:
        return 0
    buf = mmap.mmap(-1, 2 * ALIGN)
    whole, small = memoryview(buf)[:ALIGN], memoryview(buf)[ALIGN + 512:ALIGN + 1024]
    try:
        if not (os.pwrite(fd, whole, 0) == ALIGN and os.preadv(fd, [whole], 0) == ALIGN):
            return 0
        try:
            return 512 if os.pwrite(fd, small, 512) == 512 and os.preadv(fd, [small], 512) == 512 else ALIGN
        except OSError:
            return ALIGN
    except OSError:
        return 0
    finally:
        whole.release()
        small.release()
        os.close(fd)
        try:
            os.unlink(path)
        except OSError:
            pass
