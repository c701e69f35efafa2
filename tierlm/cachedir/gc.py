"""Keeping the root under a byte budget: evict whole units, least recently used first.

Units, in one LRU order: TierLM entries and AOT bundles (recency = their last-used stamp), Triton
kernel directories and autotune files (recency = mtime), quarantined and damaged entries and failed
builds kept for debugging (always first). A unit
with an in-use lease held by a live process is never removed. Dead staging directories (builder gone)
and trash are always removed. Inductor/CUDA/FlashInfer/DeepGEMM trees are counted but not split (their
internal references are the library's business), nor is TierLM's L3 KV store (``kv/``, which the engine
keeps within its own budget): if they alone exceed the budget, the report says which and how much.
Removal is rename-to-trash then delete, so no reader ever sees a half-deleted entry.
"""
from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

from tierlm.cachedir.fsutil import STAGING_PREFIX, TRASH_PREFIX, remove_tree, tree_size
from tierlm.cachedir.inventory import ENTRY_SUBSYSTEMS, FAILED_DIR, QUARANTINE_DIR, iter_entries, walk_entries
from tierlm.cachedir.lease import EvictionLock, in_use
from tierlm.cachedir.root import SUBSYSTEMS, CacheRoot

STALE_STAGING_S = 60.0


@dataclass(frozen=True)
class Unit:
    """One evictable thing: a directory or file, its subsystem, size and last-use time."""

    path: Path
    subsystem: str
    size: int
    last_used: float
    leased: bool  # protected by an in-use lock file (entries, bundles)


@dataclass
class GcReport:
    """What a GC pass found and did (sizes in bytes)."""

    budget: int
    before: int = 0
    after: int = 0
    removed: List[Tuple[Path, int]] = field(default_factory=list)
    kept_in_use: List[Path] = field(default_factory=list)
    unmanaged: int = 0
    unmanaged_by: Dict[str, int] = field(default_factory=dict)  # subsystem -> bytes gc does not split

    @property
    def over_budget(self) -> bool:
        """Still above budget after the pass (in-use entries or unmanaged trees)."""
        return self.after > self.budget


def _units(root: CacheRoot) -> Iterator[Unit]:
    """Evictable units in writable directories only (a read-only root is never touched)."""
    base_of = {s: root.subsystem_dir(s) for s in SUBSYSTEMS if root.writable(s)}
    for info in iter_entries(root):
        if info.subsystem in base_of and base_of[info.subsystem] in info.path.parents:
            yield Unit(info.path, info.subsystem, tree_size(info.path), info.last_used, _is_dir(info.path))
    for sub in ENTRY_SUBSYSTEMS:
        for aside in (QUARANTINE_DIR, FAILED_DIR):
            qdir = base_of[sub] / aside if sub in base_of else None
            if qdir is not None and qdir.is_dir():
                for child in qdir.iterdir():
                    yield Unit(child, sub, tree_size(child), 0.0, False)
    triton = base_of.get("triton")
    if triton is not None and triton.is_dir():
        for child in triton.iterdir():
            if child.is_dir() and not child.name.startswith("."):
                yield Unit(child, "triton", tree_size(child), _newest_mtime(child), False)
    autotune = base_of.get("autotune")
    if autotune is not None and autotune.is_dir():
        entry_dirs = {e.path for e in walk_entries(autotune, "autotune")}
        for dirpath, dirnames, filenames in os.walk(autotune):
            dirnames[:] = [d for d in dirnames if not d.startswith(".") and Path(dirpath) / d not in entry_dirs]
            for fname in filenames:
                if fname.endswith(".json") and not fname.startswith("."):
                    p = Path(dirpath) / fname
                    yield Unit(p, "autotune", tree_size(p), p.stat().st_mtime, False)


def _is_dir(path: Path) -> bool:
    """A real directory (only those carry an in-use lock; a damaged entry may be a file or link)."""
    return path.is_dir() and not path.is_symlink()


def _newest_mtime(path: Path) -> float:
    newest = path.stat().st_mtime
    for child in path.iterdir():
        try:
            newest = max(newest, child.stat().st_mtime)
        except OSError:
            pass
    return newest


def _sweep_dead(root: CacheRoot) -> None:
    now = time.time()
    for sub in SUBSYSTEMS:
        base = root.subsystem_dir(sub)
        if not base.is_dir() or not root.writable(sub):
            continue
        for dirpath, dirnames, _files in os.walk(base):
            keep = []
            for d in dirnames:
                full = Path(dirpath) / d
                if d.startswith(TRASH_PREFIX):
                    remove_tree(full)
                elif d.startswith(STAGING_PREFIX):
                    try:
                        old = now - full.stat().st_mtime > STALE_STAGING_S
                    except OSError:
                        continue
                    with EvictionLock(full) as lock:
                        dead = lock.acquired and old
                    if dead:
                        remove_tree(full)
                elif not d.startswith(".") and sub in ENTRY_SUBSYSTEMS:
                    keep.append(d)
            dirnames[:] = keep  # only walk TierLM-owned trees below the top level


def remove_unit(unit_path: Path, subsystem_base: Path, leased: bool = True) -> bool:
    """Remove one unit unless a live process holds it; returns True if removed."""
    trash = subsystem_base / f"{TRASH_PREFIX}{uuid.uuid4().hex}"

    def move_to_trash() -> bool:
        try:
            os.rename(unit_path, trash)  # atomic: readers see the whole unit or nothing
        except OSError:
            return False
        return True

    if leased and _is_dir(unit_path):
        with EvictionLock(unit_path) as lock:
            moved = lock.acquired and move_to_trash()
    else:
        moved = move_to_trash()
    if moved:
        remove_tree(trash)
    return moved


def disk_usage(root: CacheRoot) -> int:
    """Bytes used by all subsystem directories that receive writes."""
    return sum(tree_size(root.subsystem_dir(s)) for s in SUBSYSTEMS)


def collect_garbage(root: CacheRoot, max_bytes: int, dry_run: bool = False) -> GcReport:
    """Evict LRU units until the root's writable dirs fit `max_bytes`; in-use entries are skipped."""
    if not dry_run:
        _sweep_dead(root)
    report = GcReport(budget=max_bytes)
    sizes = {s: tree_size(root.subsystem_dir(s)) for s in SUBSYSTEMS}
    report.before = sum(sizes.values())
    units = sorted(_units(root), key=lambda u: u.last_used)
    for unit in units:
        sizes[unit.subsystem] -= unit.size
    report.unmanaged_by = {s: n for s, n in sizes.items() if n > 0}
    report.unmanaged = sum(report.unmanaged_by.values())
    total = report.before
    for unit in units:
        if total <= max_bytes:
            break
        if dry_run:
            if unit.leased and in_use(unit.path):
                report.kept_in_use.append(unit.path)
                continue
            report.removed.append((unit.path, unit.size))
            total -= unit.size
            continue
        if remove_unit(unit.path, root.subsystem_dir(unit.subsystem), unit.leased):
            report.removed.append((unit.path, unit.size))
            total -= unit.size
        else:
            report.kept_in_use.append(unit.path)
    report.after = total if dry_run else disk_usage(root)
    return report


def clear_subsystem(root: CacheRoot, subsystem: str) -> int:
    """Empty one subsystem directory except entries a live process holds; returns how many were kept.
    Raises OSError (with the path) when something cannot be moved away."""
    base = root.subsystem_dir(subsystem)
    if not base.is_dir():
        return 0
    kept: List[Path] = []
    if subsystem in ENTRY_SUBSYSTEMS:
        for info in list(iter_entries(root, subsystem)):
            if base in info.path.parents and not remove_unit(info.path, base):
                kept.append(info.path)
    trash = base / f"{TRASH_PREFIX}clear-{os.getpid()}-{time.time_ns()}"
    _move_all_but(base, kept, trash)
    remove_tree(trash)
    return len(kept)


def _move_all_but(directory: Path, kept: List[Path], trash: Path) -> None:
    for child in list(directory.iterdir()):
        if child == trash or child in kept:
            continue
        if any(child in k.parents for k in kept):
            _move_all_but(child, kept, trash)
            continue
        trash.mkdir(exist_ok=True)
        try:
            os.rename(child, trash / f"{len(list(trash.iterdir()))}-{child.name}")
        except OSError as e:
            raise OSError(e.errno, e.strerror, str(child)) from None
