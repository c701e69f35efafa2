"""Finding published entries under a root, their recency, and moving bad ones aside.

An entry is any directory whose ``manifest.json`` has a TierLM format (entries and AOT bundles).
The walk skips third-party subsystems and trees (their files are not ours to interpret), hidden
directories (staging, trash, quarantine, locks) and never descends into an entry.

A *damaged* entry is reported too, so that `verify` and `gc` see it: a directory whose manifest is
missing, empty, not JSON or mistyped, or anything at a key's place (``<32 hex digits>``) that is not a
directory. Publishing is one atomic rename of a complete directory, so such a thing is never an entry
being written: it is safe to quarantine.
"""
from __future__ import annotations

import json
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, FrozenSet, Iterator, Optional

from tierlm.cachedir.fsutil import RESERVED_PREFIX, fsync_dir
from tierlm.cachedir.manifest import MANIFEST_NAME, load_manifest
from tierlm.cachedir.root import SUBSYSTEMS, THIRD_PARTY_SUBSYSTEMS, THIRD_PARTY_VARS, CacheRoot

STAMP_NAME = RESERVED_PREFIX + "last-used"
BUNDLE_MARKER = RESERVED_PREFIX + "bundle.json"  # factors of an AOT bundle not sealed yet
UNSEALED_FORMAT = "tierlm-bundle/unsealed"
DAMAGED_FORMAT = "tierlm-damaged"
QUARANTINE_DIR = ".quarantine"
FAILED_DIR = ".failed"  # failed builds kept for debugging (TIERLM_JIT_KEEP_FAILED=1); evicted by GC first
STAMP_INTERVAL_S = 3600.0  # rewrite the last-used stamp at most hourly (atime is useless on relatime/NFS)

# Subsystems whose directories hold TierLM entries.
ENTRY_SUBSYSTEMS = tuple(s for s in SUBSYSTEMS if s not in THIRD_PARTY_SUBSYSTEMS and s != "kv")

# Entry and bundle keys are 32 hex digits (`entry_key`, `bundle_key`). An entry sits at
# <subsystem>/<name>/<key>, never directly in the subsystem directory; only bundles do (aot/<key>).
_KEY_NAME = re.compile(r"^[0-9a-f]{32}$")


def _key_place(path: Path, base: Path, subsystem: str) -> bool:
    """Whether `path` is where an entry or bundle would be published."""
    return bool(_KEY_NAME.match(path.name)) and (path.parent != base or subsystem == "aot")


def _foreign_trees(subsystem: str) -> FrozenSet[str]:
    """Top-level directories of an entry subsystem that a library owns (e.g. ``jit/tvm-ffi``)."""
    return frozenset(suffix for s, suffix in THIRD_PARTY_VARS.values() if s == subsystem and suffix)


@dataclass(frozen=True)
class EntryInfo:
    """One published entry found on disk: where, which subsystem, its manifest and last use (epoch s)."""

    path: Path
    subsystem: str
    manifest: Dict[str, Any]
    problem: Optional[str] = None  # set for a damaged entry: what is wrong with it

    @property
    def damaged(self) -> bool:
        """The entry cannot be used (bad or missing manifest, or not a directory)."""
        return self.problem is not None

    @property
    def key(self) -> str:
        """The entry's key (its directory name)."""
        return str(self.manifest.get("key", self.path.name))

    @property
    def name(self) -> str:
        """The entry's name (path below the subsystem directory, without the key)."""
        return str(self.manifest.get("name", ""))

    @property
    def last_used(self) -> float:
        """Time of last use: the stamp if any, else the manifest's mtime (0 for a damaged entry)."""
        return 0.0 if self.damaged else last_used(self.path)


def last_used(entry_dir: Path) -> float:
    """Last-use time of an entry directory (epoch seconds; 0 if unreadable)."""
    for name in (STAMP_NAME, MANIFEST_NAME):
        try:
            return os.stat(entry_dir / name).st_mtime
        except OSError:
            continue
    return 0.0


def touch_stamp(entry_dir: Path, interval_s: float = STAMP_INTERVAL_S) -> None:
    """Refresh the last-used stamp unless it is younger than `interval_s`; silently skips read-only dirs."""
    stamp = entry_dir / STAMP_NAME
    try:
        if time.time() - stamp.stat().st_mtime < interval_s:
            return
    except OSError:
        pass
    try:
        with open(stamp, "a"):
            pass
        os.utime(stamp, None)
    except OSError:
        pass


def _unsealed(bundle_dir: Path) -> Dict[str, Any]:
    try:
        factors = json.loads((bundle_dir / BUNDLE_MARKER).read_text()).get("factors", {})
    except (OSError, ValueError, AttributeError):
        factors = {}
    return {"format": UNSEALED_FORMAT, "key": bundle_dir.name, "name": "bundle", "factors": factors, "files": {}}


def _damaged(path: Path, base: Path, subsystem: str, problem: str) -> EntryInfo:
    name = path.parent.relative_to(base).as_posix() if path.parent != base else ""
    manifest = {"format": DAMAGED_FORMAT, "key": path.name, "name": name, "files": {}}
    return EntryInfo(path, subsystem, manifest, problem)


def walk_entries(base: Path, subsystem: str) -> Iterator[EntryInfo]:
    """Entries below `base` (one subsystem directory), depth-first, stopping at each entry."""
    if not base.is_dir():
        return
    foreign = _foreign_trees(subsystem)
    stack = [base]
    while stack:
        current = stack.pop()
        if current != base:
            if os.path.lexists(current / MANIFEST_NAME):
                manifest, problem = load_manifest(current)
                yield (EntryInfo(current, subsystem, manifest) if manifest is not None
                       else _damaged(current, base, subsystem, problem or "bad manifest"))
                continue
            if (current / BUNDLE_MARKER).is_file():
                yield EntryInfo(current, subsystem, _unsealed(current))
                continue
            if _key_place(current, base, subsystem):
                yield _damaged(current, base, subsystem, f"{MANIFEST_NAME} is missing")
                continue
        try:
            children = sorted(os.scandir(current), key=lambda d: d.name, reverse=True)
        except OSError:
            continue
        for child in children:
            if child.name.startswith(".") or (current == base and child.name in foreign):
                continue
            if child.is_dir(follow_symlinks=False):
                stack.append(Path(child.path))
            elif _key_place(Path(child.path), base, subsystem):
                kind = "a symlink" if child.is_symlink() else "a file"
                yield _damaged(Path(child.path), base, subsystem, f"is {kind}, not an entry directory")


def iter_entries(root: CacheRoot, subsystem: Optional[str] = None) -> Iterator[EntryInfo]:
    """All entries under `root` (root and overlay), optionally for one subsystem."""
    seen = set()
    for sub in ENTRY_SUBSYSTEMS:
        if subsystem is not None and sub != subsystem:
            continue
        for base in root.read_dirs(sub):
            if base in seen:
                continue
            seen.add(base)
            yield from walk_entries(base, sub)


def quarantine(entry_dir: Path, subsystem_base: Path) -> Optional[Path]:
    """Move a bad entry out of sight into ``<subsystem>/.quarantine/`` (atomic rename).

    Returns the new location, or None if it could not be moved (e.g. read-only root); callers then
    simply ignore the entry.
    """
    qdir = subsystem_base / QUARANTINE_DIR
    try:
        rel = entry_dir.relative_to(subsystem_base).as_posix().replace("/", "__")
    except ValueError:
        rel = entry_dir.name
    target = qdir / f"{rel}.{time.strftime('%Y%m%d_%H%M%S')}-{uuid.uuid4().hex[:8]}"
    try:
        qdir.mkdir(parents=True, exist_ok=True)
        os.rename(entry_dir, target)
    except OSError:
        return None
    fsync_dir(entry_dir.parent)
    return target
