"""The one way TierLM-owned caches publish an artifact: `get_or_build`.

Layout: ``<subsystem dir>/<name>/<key>/`` holding the artifact files plus ``manifest.json``.

Protocol:
- the key hashes the declared factors only (source contents, versions, target arch, flags) — callers
  must not pass machine paths; values that start with the cache root or the home directory are refused;
- lookups take no lock: an entry is visible only once complete (directory rename is atomic);
- a miss takes a per-key file lock (only so that N processes do not all build), re-checks, builds into
  ``<name>/.staging-<uuid>/``, writes the manifest, fsyncs, renames to ``<key>``; if another writer won
  the rename, its copy is used and ours discarded;
- a loaded entry is checked against its manifest (sha256 up to ``TIERLM_CACHE_VERIFY_MAX_MB``, default 64,
  sizes beyond); a bad entry is quarantined and rebuilt, never loaded. So is a damaged one: a missing,
  empty, unparsable or mistyped manifest, or a file where the entry directory should be (publishing is
  an atomic rename of a complete directory, so none of these is an entry still being written);
- the returned `CacheEntry` holds an in-use lease (GC skips it) until released or garbage-collected;
- ``TIERLM_CACHE_REQUIRE_HIT=1`` turns a miss into `CacheMissError` naming the subsystem and factors.
"""
from __future__ import annotations

import datetime
import errno
import hashlib
import json
import logging
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional

from filelock import FileLock

from tierlm.cachedir.fingerprint import tierlm_version
from tierlm.cachedir.fsutil import RESERVED_PREFIX, STAGING_PREFIX, fsync_dir, fsync_tree, remove_tree
from tierlm.cachedir.inventory import quarantine, touch_stamp
from tierlm.cachedir.lease import EntryLease
from tierlm.cachedir.manifest import (ENTRY_FORMAT, check_files, load_manifest, manifest_bytes, read_manifest,
                                     write_manifest)
from tierlm.cachedir.root import CacheRoot, check_subsystem, resolve_root

logger = logging.getLogger(__name__)

_NAME_PART = re.compile(r"^[A-Za-z0-9_+=@-][A-Za-z0-9_.+=@-]*$")
LOCKS_DIR = RESERVED_PREFIX + "locks"


class CacheMissError(RuntimeError):
    """A lookup missed while ``TIERLM_CACHE_REQUIRE_HIT=1`` (pre-seeded cache that no longer matches)."""

    def __init__(self, subsystem: str, name: str, key: str, factors: Mapping[str, Any], hint: str) -> None:
        self.subsystem, self.name, self.key, self.factors = subsystem, name, key, dict(factors)
        super().__init__(
            f"cache miss in subsystem {subsystem!r} for {name!r} (key {key[:16]}) with "
            f"TIERLM_CACHE_REQUIRE_HIT=1; key factors: {json.dumps(self.factors, sort_keys=True)}{hint}")


@dataclass(frozen=True)
class CacheEntry:
    """A published, checked entry: its directory, key, factors, and whether it was a hit.

    Usable as a path (``os.fspath(entry)``). Holds an in-use lease so that GC will not delete it while
    this object is alive; call `release()` when the files are no longer needed.
    """

    subsystem: str
    name: str
    key: str
    path: Path
    factors: Dict[str, Any]
    hit: bool
    lease: Optional[EntryLease] = field(default=None, compare=False, repr=False)

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def release(self) -> None:
        """Let GC evict this entry again."""
        if self.lease is not None:
            self.lease.release()


def entry_key(subsystem: str, name: str, key_factors: Mapping[str, Any]) -> str:
    """Hex key (32 chars) of the canonical JSON of subsystem, name and factors."""
    blob = json.dumps({"subsystem": subsystem, "name": name, "factors": key_factors},
                      sort_keys=True, separators=(",", ":"), default=_reject)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _reject(value: Any) -> Any:
    raise TypeError(f"key factor value {value!r} is not JSON-serialisable; pass a str/number/list/dict")


def check_name(name: str) -> str:
    """Validate an entry name: relative, '/'-separated safe components (e.g. 'sm90/rmsnorm')."""
    parts = name.split("/")
    if not name or not all(_NAME_PART.match(p) for p in parts):
        raise ValueError(f"invalid cache entry name {name!r}: use letters, digits, _ . + = @ - and '/'")
    return name


def _check_factors(factors: Mapping[str, Any], root: CacheRoot) -> None:
    anchors = [str(root.path)]
    home = os.path.expanduser("~")
    if len(home) > 1:
        anchors.append(home)

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, str) and any(value == a or value.startswith(a + os.sep) for a in anchors):
            raise ValueError(f"key factor {prefix!r} embeds a machine path ({value}); hash contents instead")
        if isinstance(value, Mapping):
            for k, v in value.items():
                walk(f"{prefix}.{k}", v)
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(f"{prefix}[{i}]", v)

    for k, v in factors.items():
        walk(str(k), v)


def _verify_limit() -> int:
    try:
        return int(float(os.environ.get("TIERLM_CACHE_VERIFY_MAX_MB", "64")) * (1 << 20))
    except ValueError:
        return 64 << 20


def _load(subsystem: str, name: str, key: str, factors: Mapping[str, Any], entry_dir: Path,
          base: Path, hit: bool, writable: bool = True) -> Optional[CacheEntry]:
    """Check and open an entry; in a read-only place (seeded root) nothing is written: no stamp,
    no lease, no quarantine (root bypasses permission bits, so we must not rely on EACCES)."""
    manifest, damage = load_manifest(entry_dir)
    if damage == "missing":  # evicted or quarantined by another process since we looked
        return None
    problems = [] if manifest is None else check_files(
        entry_dir, manifest, full=manifest_bytes(manifest) <= _verify_limit())
    if manifest is None or manifest.get("key") != key or problems:
        why = damage or "; ".join(f"{p.path}: {p.problem}" for p in problems[:3]) or "key mismatch"
        moved = quarantine(entry_dir, base) if writable else None
        logger.warning("tierlm cache: %s entry %s/%s failed its check (%s); %s", subsystem, name, key[:12],
                       why, f"quarantined to {moved}" if moved else "ignoring it (cannot move it)")
        return None
    if not writable:
        return CacheEntry(subsystem, name, key, entry_dir, dict(manifest.get("factors", {})), hit, None)
    lease = EntryLease(entry_dir)
    if lease.held and not lease.valid():
        lease.release()
        return None
    touch_stamp(entry_dir)
    return CacheEntry(subsystem, name, key, entry_dir, dict(manifest.get("factors", {})), hit,
                      lease if lease.held else None)


def lookup(subsystem: str, name: str, key_factors: Mapping[str, Any],
           root: Optional[CacheRoot] = None) -> Optional[CacheEntry]:
    """The checked entry for these factors, or None (a bad one is quarantined). Takes no lock."""
    root = root or resolve_root()
    key = entry_key(check_subsystem(subsystem), check_name(name), key_factors)
    write_dir = root.subsystem_dir(subsystem)
    for base in root.read_dirs(subsystem):
        entry_dir = base / name / key
        if os.path.lexists(entry_dir):  # a file or dangling link there is damage, quarantined by _load
            writable = base == write_dir and root.writable(subsystem)
            entry = _load(subsystem, name, key, key_factors, entry_dir, base, hit=True, writable=writable)
            if entry is not None:
                return entry
    return None


def _miss_hint(root: CacheRoot, subsystem: str, name: str, factors: Mapping[str, Any]) -> str:
    diffs: List[str] = []
    for base in root.read_dirs(subsystem):
        parent = base / name
        if not parent.is_dir():
            continue
        for child in sorted(parent.iterdir()):
            other = read_manifest(child) if not child.name.startswith(".") else None
            if other is None:
                continue
            theirs = other.get("factors", {})
            changed = sorted(k for k in set(theirs) | set(factors) if theirs.get(k) != factors.get(k))
            diffs.append(f"{child.name[:12]} differs in {', '.join(changed) or 'nothing'}")
    if not diffs:
        return f"; no entry named {name!r} in {', '.join(map(str, root.read_dirs(subsystem)))}"
    return "; nearest existing: " + "; ".join(diffs[:3])


def require_hit_enabled() -> bool:
    """Whether ``TIERLM_CACHE_REQUIRE_HIT`` asks for misses to be errors."""
    return os.environ.get("TIERLM_CACHE_REQUIRE_HIT", "") not in ("", "0")


def get_or_build(subsystem: str, name: str, key_factors: Mapping[str, Any],
                 build_fn: Callable[[Path], None], root: Optional[CacheRoot] = None,
                 require_hit: Optional[bool] = None) -> CacheEntry:
    """Return the entry for `key_factors`, building it with ``build_fn(staging_dir)`` on a miss.

    `build_fn` writes the artifact files into the directory it is given (which is not their final
    location: store relative paths only). Exactly one concurrent caller per key builds; the others wait
    on the key's lock and then load the published entry. Raises `CacheMissError` on a miss when
    `require_hit` (default: ``TIERLM_CACHE_REQUIRE_HIT``), and OSError if nothing is writable.
    """
    root = root or resolve_root()
    check_subsystem(subsystem)
    check_name(name)
    _check_factors(key_factors, root)
    key = entry_key(subsystem, name, key_factors)
    found = lookup(subsystem, name, key_factors, root)
    if found is not None:
        return found
    if require_hit if require_hit is not None else require_hit_enabled():
        raise CacheMissError(subsystem, name, key, key_factors, _miss_hint(root, subsystem, name, key_factors))
    base = root.require_writable(subsystem, f"{subsystem} entry {name}")
    parent = base / name
    parent.mkdir(parents=True, exist_ok=True)
    (parent / LOCKS_DIR).mkdir(exist_ok=True)
    with FileLock(str(parent / LOCKS_DIR / f"{key}.lock")):
        found = lookup(subsystem, name, key_factors, root)
        if found is not None:
            return found
        entry_dir = _build(subsystem, name, key, key_factors, build_fn, parent)
    entry = _load(subsystem, name, key, key_factors, entry_dir, base, hit=False)
    if entry is None:
        raise OSError(errno.EIO, f"freshly built {subsystem} entry {name}/{key[:12]} failed its check")
    _maybe_collect(root)
    return entry


def _build(subsystem: str, name: str, key: str, factors: Mapping[str, Any],
           build_fn: Callable[[Path], None], parent: Path) -> Path:
    staging = parent / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
    staging.mkdir()
    lease = EntryLease(staging)  # marks the staging dir live, so GC leaves it alone while we build
    try:
        logger.info("tierlm cache: building %s entry %s (key %s)", subsystem, name, key[:12])
        build_fn(staging)
        write_manifest(staging, {
            "format": ENTRY_FORMAT, "subsystem": subsystem, "name": name, "key": key,
            "factors": dict(factors), "tierlm_version": tierlm_version(),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})
        fsync_tree(staging)
        target = parent / key
        lease.release()
        try:
            os.rename(staging, target)
        except OSError as e:
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            logger.info("tierlm cache: another process published %s/%s first; using its copy", name, key[:12])
            remove_tree(staging)
        fsync_dir(parent)
        return target
    except BaseException:
        lease.release()
        remove_tree(staging)
        raise


def _maybe_collect(root: CacheRoot) -> None:
    from tierlm.cachedir.budget import budget_from_env
    from tierlm.cachedir.gc import collect_garbage
    try:
        budget = budget_from_env()
        if budget is not None:
            collect_garbage(root, budget)
    except (ValueError, OSError) as e:
        logger.warning("tierlm cache: automatic GC failed: %s", e)
