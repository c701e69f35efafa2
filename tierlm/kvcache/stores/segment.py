"""The on-disk format of the file store's segments, and the space calls on them (preallocate, punch).

A segment holds the pages of one `batch_set` call, written once and never modified except that a removed
page's bytes are punched out (deallocated). Layout, every offset a multiple of `ALIGN` so that the whole
file can be written and read with O_DIRECT (the transfers: `record_io.py`):

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
import os
import struct
from typing import NamedTuple, Sequence

from tierlm.kvcache.stores.base import crc32

ALIGN = 4096  # alignment of records and of the file's size (the largest logical block in use)
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
