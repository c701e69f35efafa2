"""File-system calls on a directory that other engines change at the same time: a file that vanished or cannot
be read between a listing and the call is an answer (none, not a file, already gone), never an error."""
from __future__ import annotations

import logging
import os
from typing import Optional

logger = logging.getLogger(__name__)


def mtime_ns(path: str | os.PathLike) -> Optional[int]:
    """The modification time of `path` in ns, or None if it vanished or cannot be read."""
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def is_file(entry: os.DirEntry) -> bool:
    """Whether a listed entry is a regular file (not a link, not gone meanwhile)."""
    try:
        return entry.is_file(follow_symlinks=False)
    except OSError:
        return False


def listdir(path: str | os.PathLike) -> list[os.DirEntry]:
    """The entries of `path`, or none if it vanished or cannot be listed."""
    try:
        with os.scandir(path) as it:
            return list(it)
    except OSError:
        return []


def unlink(path: str | os.PathLike) -> None:
    """Remove `path` if possible: a file already gone or one we may not remove is not an error here."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        logger.debug("File KV store: cannot remove %s (%s)", path, e)
