"""`FileKVStore`: the default L3, one file per page under `<cache root>/kv/`, with an LRU byte budget.

Writes are atomic (a temp file in the same directory, then `os.replace`), so a reader sees a whole page
or none; a page torn by a crash fails its checksum, reads as a miss and is removed. Reads refresh the
file's mtime, the last-used stamp that LRU eviction (and a restarted engine, which rebuilds its index from
the directory) goes by; the stamp is best effort, so reading never needs write access. Several engines
may share the directory: existence is asked of the file system, and files another engine removes or
renames meanwhile are skipped. A directory the engine cannot write to is served read-only.
"""
from __future__ import annotations

import errno
import logging
import os
import re
import threading
import time
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Optional, Sequence

from tierlm.kvcache.stores.base import BlobKVStore

logger = logging.getLogger(__name__)
_SUFFIX = ".kvp"
_TMP = ".tmp-"
_PAGE_NAME = re.compile(r"[0-9a-f]{64}" + re.escape(_SUFFIX))
_STALE_TMP_SECONDS = 3600.0  # younger temp files may be another engine's write in progress


class FileKVStore(BlobKVStore):
    """Pages as `<dir>/<key[:2]>/<key>.kvp`; evicts least recently used files beyond `max_bytes`.

    Only files named like pages count (and are ever evicted); anything else in the directory is left alone.
    """

    name = "file"

    def __init__(self, directory: str | os.PathLike, max_bytes: int) -> None:
        super().__init__()
        self.dir = Path(directory)
        if self.dir.exists() and not self.dir.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(self.dir))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = int(max_bytes)
        self._mu = threading.Lock()
        self._index: "OrderedDict[str, int]" = OrderedDict()  # key -> size, least recently used first
        self._bytes = 0
        self._evicted = 0
        self.read_only = not self._probe_writable()
        self._scan()

    def _path(self, key: str) -> Path:
        return self.dir / key[:2] / (key + _SUFFIX)

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
        """Rebuild the LRU index from the directory (oldest mtime first); drop stale temp files."""
        found = []
        now = time.time()
        # A page counts only where `_path` puts it, so everything indexed can be found and evicted.
        entries = ((sub.name, e) for sub in _listdir(self.dir) if len(sub.name) == 2 for e in _listdir(sub.path))
        for prefix, entry in entries:
            try:
                if entry.name.startswith(_TMP):
                    if not self.read_only and now - entry.stat().st_mtime > _STALE_TMP_SECONDS:
                        _unlink(entry.path)
                elif _PAGE_NAME.fullmatch(entry.name) and entry.name.startswith(prefix) and entry.is_file():
                    st = entry.stat()
                    found.append((st.st_mtime, entry.name[:-len(_SUFFIX)], st.st_size))
            except OSError:  # removed by another engine meanwhile, a dangling link, no permission
                continue
        for _, key, size in sorted(found):
            self._index[key] = size
            self._bytes += size
        self._evict_over_budget()
        logger.info("File KV store %s: %d pages, %.1f MiB%s", self.dir, len(self._index), self._bytes / 2**20,
                    " (read-only)" if self.read_only else "")

    def _evict_over_budget(self) -> None:
        if self.read_only:  # nothing can be removed; the budget is the owner's business
            return
        while self._bytes > self.max_bytes and self._index:
            key, size = self._index.popitem(last=False)
            self._bytes -= size
            self._evicted += 1
            _unlink(self._path(key))

    def _exists_many(self, keys: Sequence[str]) -> list[bool]:
        return [self._path(k).is_file() for k in keys]

    def _read_many(self, keys: Sequence[str]) -> list[Optional[bytes]]:
        # A valid page has exactly this size: reading one byte more is enough to reject a bigger file
        # without holding it in memory.
        limit = self._expected_blob_bytes()
        out: list[Optional[bytes]] = []
        for key in keys:
            path = self._path(key)
            try:
                with open(path, "rb") as f:
                    out.append(f.read() if limit is None else f.read(limit + 1))
            except FileNotFoundError:
                out.append(None)
                continue
            except OSError as e:  # this page only (a directory in its place, no permission): a miss
                self._error("read", e)
                out.append(None)
                continue
            try:
                os.utime(path)
            except OSError:  # not ours to stamp (read-only store, another user's file): LRU order suffers only
                pass
            with self._mu:
                if key in self._index:
                    self._index.move_to_end(key)
        return out

    def _write_many(self, keys: Sequence[str], blobs: Sequence[bytes]) -> list[bool]:
        for key, blob in zip(keys, blobs):
            path = self._path(key)
            path.parent.mkdir(exist_ok=True)
            tmp = path.parent / f"{_TMP}{uuid.uuid4().hex}"
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
                     "max_bytes": self.max_bytes, "evicted_pages": self._evicted, "read_only": self.read_only}
        return {**super().stats(), **extra}


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
