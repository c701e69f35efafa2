"""L3 KV stores and `open_store(url)`, which picks one from `--kv-store`.

    file                       <cache root>/kv (the default store)
    file:///abs/dir  or  /dir  a file store in that directory
    redis://[:pw@]host:port/db Redis
    package.module:Class[?k=v&k2=v2]   any `KVStore` subclass, constructed with the options as keywords
"""
from __future__ import annotations

import importlib
from typing import Optional
from urllib.parse import parse_qsl

from tierlm.kvcache.stores.base import BlobKVStore, CorruptPage, KVStore, decode_page, encode_page

__all__ = ["BlobKVStore", "CorruptPage", "KVStore", "decode_page", "encode_page", "open_store"]


def open_store(url: str, max_bytes: int, timeout: float, default_dir: Optional[str] = None) -> KVStore:
    """Construct the store named by `url`; raises ValueError (naming --kv-store) when it cannot."""
    if url == "file" or url.startswith("file://") or url.startswith("/"):
        from tierlm.kvcache.stores.file import FileKVStore

        path = url[len("file://"):] if url.startswith("file://") else (url if url != "file" else default_dir)
        if path is None:
            from tierlm.cachedir import subsystem_dir

            path = str(subsystem_dir("kv"))
        return FileKVStore(path, max_bytes)
    if url.startswith(("redis://", "rediss://", "unix://")):
        from tierlm.kvcache.stores.redis import RedisKVStore

        return RedisKVStore(url, timeout=timeout)
    if ":" in url and "://" not in url:
        target, _, query = url.partition("?")
        module, _, cls_name = target.partition(":")
        try:
            cls = getattr(importlib.import_module(module), cls_name)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"--kv-store {url!r}: cannot load {target}: {e}") from None
        if not (isinstance(cls, type) and issubclass(cls, KVStore)):
            raise ValueError(f"--kv-store {url!r}: {target} is not a KVStore subclass")
        return cls(**dict(parse_qsl(query)))
    raise ValueError(f"--kv-store {url!r}: expected 'file', 'file:///dir', 'redis://host:port/db' or "
                     f"'module:Class'")
