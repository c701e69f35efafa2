"""L3 KV stores and `open_store(url)`, which picks one from `--kv-store`.

    file                       <cache root>/kv (the default store)
    file:///abs/dir  or  /dir  a file store in that directory
    redis://[:pw@]host:port/db Redis (also rediss://, unix:///path/to.sock)
    package.module:Class[?k=v&k2=v2]   any `KVStore` subclass, constructed with the options as keywords
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Optional
from urllib.parse import parse_qsl, urlsplit

from tierlm.kvcache.stores.base import BlobKVStore, CorruptPage, KVStore, decode_page, encode_page

__all__ = ["BlobKVStore", "CorruptPage", "KVStore", "decode_page", "encode_page", "open_store"]

_FORMS = "expected 'file', 'file:///dir', 'redis://host:port/db', 'unix:///path.sock' or 'module:Class'"


def open_store(url: str, max_bytes: int, timeout: float, default_dir: Optional[str] = None) -> KVStore:
    """Construct the store named by `url`; raises ValueError (naming --kv-store) when it cannot."""
    if url == "file" or url.startswith(("file:", "/")):
        from tierlm.kvcache.stores.file import FileKVStore

        return _construct(url, FileKVStore, _file_dir(url, default_dir), max_bytes)
    if url.startswith(("redis://", "rediss://", "unix://")):
        from tierlm.kvcache.stores.redis import RedisKVStore

        _check_redis_url(url)
        return _construct(url, RedisKVStore, url, timeout=timeout)
    if ":" in url and "://" not in url:
        target, _, query = url.partition("?")
        module, _, cls_name = target.partition(":")
        try:
            cls = getattr(importlib.import_module(module), cls_name)
        except (ImportError, AttributeError, ValueError) as e:
            raise _bad(url, f"cannot load {target}: {e}") from None
        if not (isinstance(cls, type) and issubclass(cls, KVStore)):
            raise _bad(url, f"{target} is not a KVStore subclass")
        return _construct(url, cls, **dict(parse_qsl(query)))
    raise _bad(url, _FORMS)


def _bad(url: str, why: str) -> ValueError:
    return ValueError(f"--kv-store {url!r}: {why}")


def _construct(url: str, factory: Callable[..., KVStore], *args: Any, **kwargs: Any) -> KVStore:
    """`factory(*args, **kwargs)`, its configuration errors turned into one line naming the flag."""
    try:
        return factory(*args, **kwargs)
    except OSError as e:
        where = f" ({e.filename})" if e.filename else ""
        raise _bad(url, f"cannot open the store: {e.strerror or e}{where}") from None
    except (TypeError, ValueError) as e:
        raise _bad(url, f"cannot open the store: {e}") from None


def _file_dir(url: str, default_dir: Optional[str]) -> str:
    """The directory of a file store URL: an absolute path, never the working directory by accident."""
    if url == "file":
        if default_dir is not None:
            return default_dir
        from tierlm.cachedir import subsystem_dir

        return str(subsystem_dir("kv"))
    path = url
    if url.startswith("file://"):
        path = url[len("file://"):]  # 'file://x/...' names a host x: relative, refused below
        if path.startswith("localhost/"):
            path = path[len("localhost"):]
    elif url.startswith("file:"):
        path = url[len("file:"):]
    if not path.startswith("/") or not path.strip("/"):
        raise _bad(url, "expected 'file', 'file:///absolute/dir' or '/absolute/dir' (missing or relative path)")
    return path


def _check_redis_url(url: str) -> None:
    parts = urlsplit(url)
    try:
        parts.port
    except ValueError as e:
        raise _bad(url, f"bad port: {e}") from None
    if parts.scheme == "unix":
        if not parts.path.strip("/"):
            raise _bad(url, "missing socket path (expected 'unix:///path/to/redis.sock')")
        return
    if not parts.hostname:
        raise _bad(url, "missing host (expected 'redis://[:password@]host:port/db')")
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise _bad(url, f"database must be a number, got {db!r} (expected 'redis://host:port/db')")
