"""`KVStore`: the L3 interface, and `BlobKVStore`, a base that adds checksummed page encoding to a
key -> bytes backend so each backend only moves bytes.

Stores move whole pages between themselves and the host pool (`attach`), addressed by host page index:
no tensors cross the interface, so a backend may be written without torch.
"""
from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from typing import Any, Optional, Sequence

try:  # ISA-L's CRC-32: the same values as zlib's, an order of magnitude faster (pages are checksummed twice)
    from isal.isal_zlib import crc32
except ImportError:  # pragma: no cover - isal is a dependency; zlib keeps the stores working without it
    from zlib import crc32

logger = logging.getLogger(__name__)
_MAGIC = b"TKV1"
_HEADER = len(_MAGIC) + 32 + 8 + 4  # magic, key digest, payload length, crc32


class CorruptPage(ValueError):
    """A stored value failed verification (bad magic, wrong key, short read or checksum mismatch)."""


def page_header(key: str, length: int, crc: int) -> bytes:
    """The header of an encoded page: magic, the key it was stored under, payload length, payload CRC-32."""
    return b"".join((_MAGIC, bytes.fromhex(key), length.to_bytes(8, "little"), crc.to_bytes(4, "little")))


def parse_header(blob: bytes | memoryview) -> tuple[str, int, int]:
    """(key, length, crc) as an encoded page's header claims them (unverified); raises CorruptPage when
    there is no header."""
    view = memoryview(blob)
    if len(view) < _HEADER or view[:4] != _MAGIC:
        raise CorruptPage("bad header or short read")
    return (bytes(view[4:36]).hex(), int.from_bytes(view[36:44], "little"),
            int.from_bytes(view[44:48], "little"))


def encode_page(key: str, payload: bytes | memoryview) -> bytes:
    """Header (magic, the key it was stored under, length, CRC-32 of the payload) followed by the payload."""
    return b"".join((page_header(key, len(payload), crc32(payload)), payload))


def encoded_size(payload_len: int) -> int:
    """Bytes of an encoded page whose payload has `payload_len` bytes (what a backend may cap reads at)."""
    return _HEADER + payload_len


def decode_page(key: str, blob: bytes, expected_len: int) -> memoryview:
    """The verified payload of `blob`; raises CorruptPage on any mismatch."""
    view = memoryview(blob)
    if len(view) < _HEADER or view[:4] != _MAGIC:
        raise CorruptPage("bad header or short read")
    if bytes(view[4:36]) != bytes.fromhex(key):
        raise CorruptPage("stored under another key")
    n = int.from_bytes(view[36:44], "little")
    payload = view[_HEADER:]
    if n != expected_len or len(payload) != n:
        raise CorruptPage(f"length {len(payload)} (header {n}), expected {expected_len}")
    if crc32(payload) != int.from_bytes(view[44:48], "little"):
        raise CorruptPage("checksum mismatch")
    return payload


CALL_BYTES = 64 << 20  # bytes of pages per store call while fetching
MAX_CALL_PAGES = 1024  # a call's pages at most, however small they are
DEFAULT_CALL_PAGES = 32  # before a host pool is attached


def pages_per_call(page_bytes: int) -> int:
    """Pages of `page_bytes` per fetch call: `CALL_BYTES` of them, at least 1, at most `MAX_CALL_PAGES`
    (`DEFAULT_CALL_PAGES` while the page size is not known)."""
    return max(1, min(MAX_CALL_PAGES, CALL_BYTES // page_bytes)) if page_bytes > 0 else DEFAULT_CALL_PAGES


class KVStore(ABC):
    """An L3 KV page store shared by engines of one model (keys carry the model fingerprint).

    Contract: never raise to the caller for I/O trouble (an outage reads as misses and failed writes);
    never return a page that does not verify; be safe to call from one I/O thread while `stats` is read
    from another.
    """

    host: Any = None

    def attach(self, host_pool: Any) -> None:
        """Give the store the host pool whose pages `batch_get`/`batch_set` address."""
        self.host = host_pool

    @abstractmethod
    def batch_exists(self, keys: Sequence[str]) -> int:
        """How many leading `keys` are stored (0 on error)."""

    @abstractmethod
    def batch_get(self, keys: Sequence[str], host_pages: Sequence[int]) -> list[bool]:
        """Load each key into its host page; False = miss, corrupt or error (that page is undefined).
        A page that fails verification is also removed, so that the next `batch_set` stores it afresh."""

    @abstractmethod
    def batch_set(self, keys: Sequence[str], host_pages: Sequence[int]) -> list[bool]:
        """Store each host page under its key (already-present keys count as stored)."""

    @abstractmethod
    def delete(self, keys: Sequence[str]) -> None:
        """Remove keys (absent ones are ignored)."""

    @abstractmethod
    def clear(self) -> None:
        """Remove every page of this store."""

    @abstractmethod
    def stats(self) -> dict:
        """Counters since construction (at least hits, misses, errors, corrupt, bytes_read, bytes_written)."""

    @property
    def call_pages(self) -> int:
        """Pages per `batch_get` call while fetching (a fetch's progress moves a call at a time): as many as
        make `CALL_BYTES`, so that a call keeps the store's I/O as busy whatever the model's page size (32 of
        Llama-3.1-8B's 2 MiB pages, 134 of DeepSeek-V2-Lite's 486 KiB ones)."""
        return pages_per_call(getattr(self.host, "bytes_per_page", 0))

    @property
    def shared(self) -> bool:
        """The store is there for other engines (a fleet's network store): the storage write policy `auto`
        then writes every host copy at once, as write_through does, so that they find it."""
        return False

    def close(self) -> None:
        """Release connections and files."""


class BlobKVStore(KVStore):
    """Implements the page-level contract over four byte-level methods; counts hits, misses, corruption,
    errors, bytes and seconds. Subclasses raise freely from the `_` methods: any exception is an error.

    A subclass that finds it cannot write (a read-only store) sets `read_only`: `batch_set` then stores
    nothing and reports only the keys already present."""

    name = "blob"
    read_only = False

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stats = dict(exists_calls=0, get_calls=0, set_calls=0, hits=0, misses=0, corrupt=0, errors=0,
                           pages_written=0, bytes_read=0, bytes_written=0, read_seconds=0.0, write_seconds=0.0)
        self._last_error_log = 0.0

    # ---- byte level (subclasses) --------------------------------------------------------------------------
    @abstractmethod
    def _exists_many(self, keys: Sequence[str]) -> list[bool]: ...

    @abstractmethod
    def _read_many(self, keys: Sequence[str]) -> list[Optional[bytes]]: ...

    @abstractmethod
    def _write_many(self, keys: Sequence[str], blobs: Sequence[bytes]) -> list[bool]: ...

    @abstractmethod
    def _delete_many(self, keys: Sequence[str]) -> None: ...

    # ---- page level ---------------------------------------------------------------------------------------
    def _count(self, **delta: float) -> None:
        with self._lock:
            for k, v in delta.items():
                self._stats[k] += v

    def _error(self, what: str, e: BaseException) -> None:
        self._count(errors=1)
        now = time.monotonic()
        if now - self._last_error_log > 5.0:  # an outage logs once per 5 s, not once per call
            self._last_error_log = now
            logger.warning("KV store %s: %s failed (%s: %s); serving by recompute", self.name, what,
                           type(e).__name__, e)

    def batch_exists(self, keys: Sequence[str]) -> int:
        self._count(exists_calls=1)
        if not keys:
            return 0
        try:
            found = self._exists_many(keys)
        except Exception as e:  # noqa: BLE001 - outage = miss
            self._error("exists", e)
            return 0
        n = 0
        while n < len(found) and found[n]:
            n += 1
        return n

    def batch_get(self, keys: Sequence[str], host_pages: Sequence[int]) -> list[bool]:
        self._count(get_calls=1)
        t0 = time.perf_counter()
        try:
            blobs = self._read_many(keys)
        except Exception as e:  # noqa: BLE001
            self._error("get", e)
            return [False] * len(keys)
        ok, nbytes, corrupt = [], 0, []
        for key, page, blob in zip(keys, host_pages, blobs):
            if blob is None:
                self._count(misses=1)
                ok.append(False)
                continue
            try:
                payload = decode_page(key, blob, self.host.bytes_per_page)
            except CorruptPage as e:
                self._count(corrupt=1)
                logger.warning("KV store %s: page %s is corrupt (%s); treating it as a miss and removing it",
                               self.name, key[:16], e)
                corrupt.append(key)
                ok.append(False)
                continue
            self.host.write_page(page, payload)
            nbytes += len(blob)
            ok.append(True)
        self._count(hits=sum(ok), bytes_read=nbytes, read_seconds=time.perf_counter() - t0)
        if corrupt and not self.read_only:
            self._remove_corrupt(corrupt)
        return ok

    def _remove_corrupt(self, keys: Sequence[str]) -> None:
        # `batch_set` skips present keys, so a damaged page left in place would never be replaced.
        try:
            self._delete_many(keys)
        except Exception as e:  # noqa: BLE001 - the page stays a miss; nothing else depends on it
            logger.debug("KV store %s: could not remove corrupt pages (%s: %s)", self.name, type(e).__name__, e)

    def _expected_blob_bytes(self) -> Optional[int]:
        """The size of a valid stored page for the attached host pool (None before `attach`)."""
        return None if self.host is None else encoded_size(self.host.bytes_per_page)

    def batch_set(self, keys: Sequence[str], host_pages: Sequence[int]) -> list[bool]:
        self._count(set_calls=1)
        if not keys:
            return []
        t0 = time.perf_counter()
        try:
            present = self._present_for_set(keys)
            todo = [] if self.read_only else [i for i, p in enumerate(present) if not p]
            written = self._store_pages([keys[i] for i in todo], [host_pages[i] for i in todo]) if todo else []
        except Exception as e:  # noqa: BLE001 - a failed write is a miss later, never an error upstream
            self._error("set", e)
            return [False] * len(keys)
        ok = list(present)
        for i, w in zip(todo, written):
            ok[i] = w
        n = sum(map(bool, written))
        self._count(pages_written=n, bytes_written=n * encoded_size(self.host.bytes_per_page),
                    write_seconds=time.perf_counter() - t0)
        return ok

    def _present_for_set(self, keys: Sequence[str]) -> list[bool]:
        """Which keys are already stored (those `batch_set` skips)."""
        return self._exists_many(keys)

    def _store_pages(self, keys: Sequence[str], host_pages: Sequence[int]) -> list[bool]:
        """Store host pages not stored yet; per page whether it now is. By default each page is encoded
        as one blob for `_write_many`; a store that writes straight from host memory overrides this."""
        blobs = [encode_page(k, self.host.page_bytes(p)) for k, p in zip(keys, host_pages)]
        return self._write_many(keys, blobs)

    def delete(self, keys: Sequence[str]) -> None:
        try:
            self._delete_many(keys)
        except Exception as e:  # noqa: BLE001
            self._error("delete", e)

    def stats(self) -> dict:
        with self._lock:
            return {"backend": self.name, **self._stats}
