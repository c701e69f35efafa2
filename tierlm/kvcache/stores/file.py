"""`FileKVStore`: the default L3, one file per page under `<cache root>/kv/`, with an LRU byte budget.

Writes are atomic (a temp file in the same directory, then `os.replace`), so a reader sees a whole page
or none; a page torn by a crash fails its checksum and reads as a miss. Reads refresh the file's mtime,
the last-used stamp that LRU eviction (and a restarted engine, which rebuilds its index from the
directory) goes by. Several engines may share the directory: existence is asked of the file system.
"""
from __future__ import annotations

import logging
import os
import threading
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Optional, Sequence

from tierlm.kvcache.stores.base import BlobKVStore

logger = logging.getLogger(__name__)
_SUFFIX = ".kvp"


class FileKVStore(BlobKVStore):
    """Pages as `<dir>/<key[:2]>/<key>.kvp`; evicts least recently used files beyond `max_bytes`."""

    name = "file"

    def __init__(self, directory: str | os.PathLike, max_bytes: int) -> None:
        super().__init__()
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = int(max_bytes)
        self._mu = threading.Lock()
        self._index: "OrderedDict[str, int]" = OrderedDict()  # key -> size, least recently used first
        self._bytes = 0
        self._evicted = 0
        self._scan()

    def _path(self, key: str) -> Path:
        return self.dir / key[:2] / (key + _SUFFIX)

    def _scan(self) -> None:
        """Rebuild the LRU index from the directory (oldest mtime first); drop stale temp files."""
        found = []
        for sub in self.dir.iterdir() if self.dir.is_dir() else ():
            if not sub.is_dir():
                continue
            for entry in os.scandir(sub):
                if entry.name.startswith(".tmp-"):
                    _unlink(entry.path)
                elif entry.name.endswith(_SUFFIX):
                    st = entry.stat()
                    found.append((st.st_mtime, entry.name[:-len(_SUFFIX)], st.st_size))
        for _, key, size in sorted(found):
            self._index[key] = size
            self._bytes += size
        self._evict_over_budget()
        logger.info("File KV store %s: %d pages, %.1f MiB", self.dir, len(self._index), self._bytes / 2**20)

    def _evict_over_budget(self) -> None:
        while self._bytes > self.max_bytes and self._index:
            key, size = self._index.popitem(last=False)
            self._bytes -= size
            self._evicted += 1
            _unlink(self._path(key))

    def _exists_many(self, keys: Sequence[str]) -> list[bool]:
        return [self._path(k).is_file() for k in keys]

    def _read_many(self, keys: Sequence[str]) -> list[Optional[bytes]]:
        out: list[Optional[bytes]] = []
        for key in keys:
            path = self._path(key)
            try:
                with open(path, "rb") as f:
                    out.append(f.read())
                os.utime(path)
            except FileNotFoundError:
                out.append(None)
                continue
            with self._mu:
                if key in self._index:
                    self._index.move_to_end(key)
        return out

    def _write_many(self, keys: Sequence[str], blobs: Sequence[bytes]) -> list[bool]:
        for key, blob in zip(keys, blobs):
            path = self._path(key)
            path.parent.mkdir(exist_ok=True)
            tmp = path.parent / f".tmp-{uuid.uuid4().hex}"
            try:
                with open(tmp, "wb") as f:
                    f.write(blob)
                os.replace(tmp, path)
            except BaseException:
                _unlink(tmp)
                raise
            with self._mu:
                self._bytes += len(blob) - self._index.pop(key, 0)
                self._index[key] = len(blob)
                self._evict_over_budget()
        return [True] * len(keys)

    def _delete_many(self, keys: Sequence[str]) -> None:
        for key in keys:
            _unlink(self._path(key))
            with self._mu:
                self._bytes -= self._index.pop(key, 0)

    def clear(self) -> None:
        with self._mu:
            keys = list(self._index)
        self._delete_many(keys)

    def stats(self) -> dict:
        with self._mu:
            extra = {"dir": str(self.dir), "pages": len(self._index), "bytes": self._bytes,
                     "max_bytes": self.max_bytes, "evicted_pages": self._evicted}
        return {**super().stats(), **extra}


def _unlink(path: str | os.PathLike) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
