"""`MemoryKVStore`: an in-process dict store, for tests and as the smallest example of a backend."""
from __future__ import annotations

import threading
from typing import Optional, Sequence

from tierlm.kvcache.stores.base import BlobKVStore


class MemoryKVStore(BlobKVStore):
    """Keeps encoded pages in a dict; lives as long as the engine (load it as
    `--kv-store tierlm.kvcache.stores.memory:MemoryKVStore`)."""

    name = "memory"

    def __init__(self, **_: str) -> None:
        super().__init__()
        self.data: dict[str, bytes] = {}
        self._mu = threading.Lock()

    def _exists_many(self, keys: Sequence[str]) -> list[bool]:
        with self._mu:
            return [k in self.data for k in keys]

    def _read_many(self, keys: Sequence[str]) -> list[Optional[bytes]]:
        with self._mu:
            return [self.data.get(k) for k in keys]

    def _write_many(self, keys: Sequence[str], blobs: Sequence[bytes]) -> list[bool]:
        with self._mu:
            self.data.update(zip(keys, blobs))
        return [True] * len(keys)

    def _delete_many(self, keys: Sequence[str]) -> None:
        with self._mu:
            for k in keys:
                self.data.pop(k, None)

    def clear(self) -> None:
        with self._mu:
            self.data.clear()
