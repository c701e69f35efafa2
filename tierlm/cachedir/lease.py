"""In-use markers: a shared `flock` on ``<entry>/.tierlm-inuse`` held while a process uses an entry.

GC takes the same lock exclusively and without waiting before deleting; if it cannot, a live process
holds the entry and it is skipped. The kernel drops the lock when the holder exits or is killed, so a
crashed process never leaves a stale marker (unlike pid files, which also collide across machines).
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Optional

from tierlm.cachedir.fsutil import RESERVED_PREFIX
from tierlm.cachedir.manifest import MANIFEST_NAME

INUSE_NAME = RESERVED_PREFIX + "inuse"


class EntryLease:
    """Marks one entry directory as in use by this process until `release()` (or garbage collection).

    Acquisition may fail (read-only directory, entry removed meanwhile): `held` is then False and the
    caller should treat a vanished entry (no manifest) as a miss.
    """

    def __init__(self, entry_dir: Path) -> None:
        self.entry_dir = Path(entry_dir)
        self._fd: Optional[int] = None
        try:
            fd = os.open(self.entry_dir / INUSE_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)  # GC holds LOCK_EX only for a rename: short wait
        except OSError:
            os.close(fd)
            return
        self._fd = fd

    @property
    def held(self) -> bool:
        """True while the shared lock is held."""
        return self._fd is not None

    def valid(self) -> bool:
        """The entry still exists at its published path (it was not evicted before we locked it)."""
        return (self.entry_dir / MANIFEST_NAME).is_file()

    def release(self) -> None:
        """Drop the marker; idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> "EntryLease":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


class EvictionLock:
    """Exclusive, non-blocking hold on an entry's in-use file; `acquired` False means someone uses it."""

    def __init__(self, entry_dir: Path) -> None:
        self._fd: Optional[int] = None
        self.acquired = False
        try:
            fd = os.open(Path(entry_dir) / INUSE_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return
        self._fd, self.acquired = fd, True

    def release(self) -> None:
        """Unlock; idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> "EvictionLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def in_use(entry_dir: Path) -> bool:
    """Whether a live process holds a lease on `entry_dir` (False if it cannot be checked)."""
    if not (Path(entry_dir) / INUSE_NAME).exists():
        return False
    lock = EvictionLock(entry_dir)
    try:
        return not lock.acquired and os.access(entry_dir, os.W_OK)
    finally:
        lock.release()
