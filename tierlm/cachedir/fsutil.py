"""Small filesystem helpers shared by the cache root: durable atomic writes, sizes, human units."""
from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Iterator, Union

PathLike = Union[str, "os.PathLike[str]"]

# Names inside an entry that belong to the cache machinery, not to the artifact (never in a manifest).
RESERVED_PREFIX = ".tierlm-"
STAGING_PREFIX = ".staging-"
TRASH_PREFIX = ".trash-"

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
_SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmgtp]?)(i?b?)\s*$", re.IGNORECASE)


def fsync_dir(path: PathLike) -> None:
    """fsync a directory so a rename or create inside it survives a crash (best effort)."""
    try:
        fd = os.open(os.fspath(path), os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(path: PathLike) -> None:
    """fsync every regular file and directory under `path` (bottom-up), then `path` itself."""
    for dirpath, _dirnames, filenames in os.walk(os.fspath(path), topdown=False):
        for name in filenames:
            full = os.path.join(dirpath, name)
            if os.path.islink(full):
                continue
            fd = os.open(full, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(dirpath)


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write `data` to `path` through a uniquely named temporary file, fsync, then rename over it.

    Readers see either the old file or the new one, never a torn write.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f"{RESERVED_PREFIX}tmp-{uuid.uuid4().hex}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    fsync_dir(target.parent)
    return target


def iter_files(path: PathLike) -> Iterator[Path]:
    """Regular files under `path` (no symlinks followed), in a stable order."""
    base = Path(path)
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames.sort()
        for name in sorted(filenames):
            yield Path(dirpath) / name


def tree_size(path: PathLike) -> int:
    """Bytes allocated on disk under `path` (hard links counted once); 0 if it does not exist."""
    base = os.fspath(path)
    try:
        st = os.lstat(base)
    except OSError:
        return 0
    if not os.path.isdir(base):
        return _allocated(st)
    seen: set = set()
    total = 0
    for dirpath, _dirnames, filenames in os.walk(base):
        for name in filenames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            ident = (st.st_dev, st.st_ino)
            if st.st_nlink > 1:
                if ident in seen:
                    continue
                seen.add(ident)
            total += _allocated(st)
    return total


def _allocated(st: os.stat_result) -> int:
    blocks = getattr(st, "st_blocks", None)
    return blocks * 512 if blocks is not None else st.st_size


def remove_tree(path: PathLike) -> None:
    """Delete a file or directory tree; missing paths are fine."""
    p = os.fspath(path)
    if os.path.isdir(p) and not os.path.islink(p):
        shutil.rmtree(p, ignore_errors=True)
    else:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


def format_bytes(n: float) -> str:
    """Human-readable binary size: 0 B, 512 B, 1.5 KiB, 12.3 GiB."""
    value = float(n)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} {_UNITS[-1]}"  # pragma: no cover


def parse_size(text: str, require_unit: bool = False) -> int:
    """Parse '500M', '10G', '1.5GiB', '2048' (bytes) into bytes; powers of 1024. Raises ValueError.

    With `require_unit`, a bare number other than 0 is refused (say '20G' or '2048B').
    """
    m = _SIZE_RE.match(text)
    if not m:
        raise ValueError(f"not a size: {text!r} (examples: 512M, 10G, 1.5GiB)")
    number, prefix = float(m.group(1)), m.group(2).lower()
    if require_unit and number != 0 and not (prefix or m.group(3)):
        raise ValueError(f"no unit: say {m.group(1)}G for GiB, {m.group(1)}M for MiB or {m.group(1)}B for bytes")
    scale = 1024 ** ("kmgtp".index(prefix) + 1) if prefix else 1
    return int(number * scale)
