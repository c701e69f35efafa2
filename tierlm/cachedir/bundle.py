"""Portable AOT bundles: one directory ``aot/<key>/`` that holds everything one configuration compiled.

Layout of a bundle (a root layout in miniature, so the usual helpers work inside it)::

    aot/<key>/manifest.json    key factors, environment fingerprint, sha256 per file (once sealed)
    aot/<key>/inductor/        Inductor's cache, with Triton nested at inductor/triton/
    aot/<key>/autotune/        autotune results (the store's directory while the bundle is active)
    aot/<key>/jit/             our own entries (``bundle.layout_root()``)

Life cycle: ``AotBundle.open(factors)`` finds or creates it; ``activate()`` points Inductor, Triton and
the autotune store into it (before the first compile); compile as usual; ``seal()`` writes the manifest.
Copying the directory, or ``export_bundles`` / ``import_bundles`` (``tierlm cache export|import``), moves
it to another root, where a fresh process gets cache hits for everything (no recompilation). Import refuses
any archive member its bundle's manifest does not list, and any link (`tierlm.cachedir.archive`),
checks every file's sha256 and the environment (torch, triton, python, machine, device arch) and
refuses a mismatch unless forced.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import shutil
import sys
import tarfile
import uuid
from pathlib import Path
from typing import Any, Dict, List, Mapping, MutableMapping, Optional, Sequence

from tierlm.cachedir.archive import ArchiveRefused, extract_checked
from tierlm.cachedir.entry import CacheMissError, require_hit_enabled
from tierlm.cachedir.fingerprint import compatibility_problems, environment_fingerprint
from tierlm.cachedir.fsutil import STAGING_PREFIX, TRASH_PREFIX, atomic_write_bytes, fsync_dir, fsync_tree, remove_tree
from tierlm.cachedir.inventory import BUNDLE_MARKER
from tierlm.cachedir.lease import EntryLease, EvictionLock
from tierlm.cachedir.manifest import BUNDLE_FORMAT, MANIFEST_NAME, check_files, read_manifest, write_manifest
from tierlm.cachedir.root import CacheRoot, override_var, resolve_root

logger = logging.getLogger(__name__)


class BundleError(Exception):
    """An export/import/open that cannot proceed: incompatible, corrupt or missing bundle."""


def bundle_key(key_factors: Mapping[str, Any]) -> str:
    """Key (32 hex chars) of a configuration's factors (model id, dtype, TP size, device arch...)."""
    blob = json.dumps({"aot": dict(key_factors)}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


class AotBundle:
    """A self-contained, relocatable directory of compiled artifacts for one configuration."""

    def __init__(self, path: Path, key: str, factors: Mapping[str, Any],
                 device: Optional[Mapping[str, Any]] = None) -> None:
        self.path = Path(path)
        self.key = key
        self.factors = dict(factors)
        self.device = dict(device or {})
        self._lease: Optional[EntryLease] = None

    @classmethod
    def open(cls, key_factors: Mapping[str, Any], root: Optional[CacheRoot] = None,
             device: Optional[Mapping[str, Any]] = None) -> "AotBundle":
        """Find the bundle for `key_factors` (copying it out of a read-only root) or create an empty one."""
        root = root or resolve_root()
        key = bundle_key(key_factors)
        write_dir = root.require_writable("aot", "an AOT bundle") / key
        for base in root.read_dirs("aot"):
            candidate = base / key
            manifest = read_manifest(candidate)
            if manifest is None:
                continue
            if check_files(candidate, manifest, full=False):
                logger.warning("tierlm cache: AOT bundle %s is damaged; run `tierlm cache verify`", candidate)
                continue
            if candidate != write_dir:
                _copy_in(candidate, write_dir)
            return cls(write_dir, key, key_factors, device)
        if require_hit_enabled():
            raise CacheMissError("aot", "bundle", key, key_factors,
                                 f"; no sealed bundle in {', '.join(map(str, root.read_dirs('aot')))}")
        _create_unsealed(write_dir, json.dumps({"key": key, "factors": dict(key_factors)}, sort_keys=True).encode())
        return cls(write_dir, key, key_factors, device)

    @property
    def sealed(self) -> bool:
        """Whether a manifest has been written."""
        return read_manifest(self.path) is not None

    @property
    def inductor_dir(self) -> Path:
        """Inductor's cache directory inside the bundle."""
        return self.path / "inductor"

    @property
    def triton_dir(self) -> Path:
        """Triton's cache directory inside the bundle (nested under Inductor's, as Inductor does)."""
        return self.inductor_dir / "triton"

    @property
    def autotune_dir(self) -> Path:
        """The autotune store's directory inside the bundle (tuned launch parameters travel with it)."""
        return self.path / "autotune"

    def layout_root(self) -> CacheRoot:
        """A root view of the bundle, for `get_or_build(..., root=)` and `AutotuneStore(root=)`."""
        return CacheRoot(path=self.path, source=f"AOT bundle {self.key}")

    def activate(self, environ: Optional[MutableMapping[str, str]] = None) -> None:
        """Point Inductor, Triton and the autotune store into the bundle and mark it in use; call before
        compiling.

        The variables are inherited by child processes. If Inductor is already loaded, its in-process
        directory caches are cleared so it picks up the new location (torch itself is never imported).
        """
        env = os.environ if environ is None else environ
        self.triton_dir.mkdir(parents=True, exist_ok=True)
        env["TORCHINDUCTOR_CACHE_DIR"] = str(self.inductor_dir)
        env["TRITON_CACHE_DIR"] = str(self.triton_dir)
        env[override_var("autotune")] = str(self.autotune_dir)
        utils = sys.modules.get("torch._inductor.utils")
        if utils is not None and hasattr(utils, "clear_caches"):
            utils.clear_caches()
        if self._lease is None:
            self._lease = EntryLease(self.path)
        logger.info("tierlm cache: AOT bundle %s active (%s)", self.key[:12], self.path)

    def seal(self) -> Dict[str, Any]:
        """Write the manifest (environment fingerprint + sha256 of every file); may be called again."""
        fsync_tree(self.path)
        manifest = write_manifest(self.path, {
            "format": BUNDLE_FORMAT, "key": self.key, "name": "bundle", "factors": self.factors,
            "environment": environment_fingerprint(self.device),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})
        logger.info("tierlm cache: sealed AOT bundle %s (%d files)", self.key[:12], len(manifest["files"]))
        return manifest

    def release(self) -> None:
        """Drop the in-use mark taken by `activate()`."""
        if self._lease is not None:
            self._lease.release()
            self._lease = None


def _create_unsealed(target: Path, marker: bytes) -> None:
    """Create an empty bundle directory with its marker in one rename: a key directory with neither
    marker nor manifest is damage to `verify`, so one must never be visible, even briefly."""
    if target.is_dir():
        if not (target / BUNDLE_MARKER).exists():
            atomic_write_bytes(target / BUNDLE_MARKER, marker)
        return
    staging = target.parent / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
    staging.mkdir(parents=True)
    atomic_write_bytes(staging / BUNDLE_MARKER, marker)
    try:
        os.rename(staging, target)
    except OSError:
        remove_tree(staging)
        if not target.is_dir():  # not a concurrent opener's directory: something is in the way
            raise
    fsync_dir(target.parent)


def _copy_in(source: Path, target: Path) -> None:
    """Materialise a bundle from a read-only root into the writable one (atomic publish)."""
    staging = target.parent / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copytree(source, staging, ignore=shutil.ignore_patterns(".tierlm-inuse", ".tierlm-last-used"))
        fsync_tree(staging)
        os.rename(staging, target)
    except OSError:
        remove_tree(staging)
        if read_manifest(target) is None:
            raise
    fsync_dir(target.parent)


def sealed_bundles(root: CacheRoot) -> List[Path]:
    """Sealed bundle directories in the root (and overlay)."""
    out = []
    for base in root.read_dirs("aot"):
        if base.is_dir():
            out.extend(p for p in sorted(base.iterdir()) if not p.name.startswith(".") and read_manifest(p))
    return out


def export_bundles(root: CacheRoot, out_file: Path, keys: Sequence[str] = ()) -> List[str]:
    """Write sealed bundles (all, or those whose key starts with one of `keys`) to a .tar.gz."""
    chosen = [p for p in sealed_bundles(root) if not keys or any(p.name.startswith(k) for k in keys)]
    if not chosen:
        raise BundleError(f"no sealed AOT bundle to export in {root.subsystem_dir('aot')}"
                          + (f" matching {', '.join(keys)}" if keys else ""))
    out_file = Path(out_file)
    tmp = out_file.with_name(f".{out_file.name}.{uuid.uuid4().hex}.part")
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            for bundle in chosen:
                manifest = read_manifest(bundle) or {}
                problems = check_files(bundle, manifest, full=True)
                if problems:
                    raise BundleError(f"bundle {bundle.name} is damaged ({problems[0].path}: "
                                      f"{problems[0].problem}); run `tierlm cache verify`")
                for rel in [MANIFEST_NAME, *sorted(manifest["files"])]:
                    tar.add(bundle / rel, arcname=f"aot/{bundle.name}/{rel}", recursive=False)
        os.replace(tmp, out_file)
    finally:
        if tmp.exists():
            tmp.unlink()
    return [b.name for b in chosen]


def import_bundles(root: CacheRoot, archive: Path, force: bool = False,
                   device: Optional[Mapping[str, Any]] = None) -> List[str]:
    """Install the bundles of an exported archive into `root`; all-or-nothing.

    Refuses (BundleError) damaged bundles always, and incompatible ones unless `force`. An identical
    sealed bundle already present is kept; a different one is replaced only with `force`.
    """
    base = root.require_writable("aot", "imported AOT bundles")
    base.mkdir(parents=True, exist_ok=True)
    staging = base / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
    current = environment_fingerprint(device)
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                extract_checked(tar, staging)
        except ArchiveRefused as e:
            raise BundleError(f"{archive}: {e}") from None
        except tarfile.ReadError:  # its message lists every compression tried, one line each
            raise BundleError(f"cannot read {archive}: not a tar archive (plain or compressed); give the .tar.gz "
                              "written by `tierlm cache export`") from None
        except (OSError, tarfile.TarError) as e:
            raise BundleError(f"cannot read {archive}: {e}") from None
        found = sorted((staging / "aot").iterdir()) if (staging / "aot").is_dir() else []
        if not found or any(p.name.startswith(".") for p in found):
            raise BundleError(f"{archive} holds no TierLM AOT bundle (expected aot/<key>/manifest.json)")
        for bundle in found:
            _check_import(bundle, current, force)
        installed = []
        for bundle in found:
            if _install(bundle, base / bundle.name, force):
                installed.append(bundle.name)
        return installed
    finally:
        remove_tree(staging)


def _check_import(bundle: Path, current: Mapping[str, Any], force: bool) -> None:
    manifest = read_manifest(bundle)
    if manifest is None or manifest.get("format") != BUNDLE_FORMAT or manifest.get("key") != bundle.name:
        raise BundleError(f"{bundle.name}: missing or invalid manifest")
    problems = check_files(bundle, manifest, full=True)
    if problems:
        raise BundleError(f"bundle {bundle.name} is corrupt: {problems[0].path}: {problems[0].problem}")
    mismatch = compatibility_problems(manifest.get("environment", {}), current)
    if mismatch:
        text = ", ".join(f"{k} {was!r} (bundle) vs {now!r} (here)" for k, (was, now) in sorted(mismatch.items()))
        if not force:
            raise BundleError(f"bundle {bundle.name[:12]} was built for another environment: {text}; "
                              "use --force to install it anyway")
        logger.warning("tierlm cache: installing incompatible bundle %s (--force): %s", bundle.name[:12], text)


def _install(bundle: Path, target: Path, force: bool) -> bool:
    existing = read_manifest(target)
    if existing is not None and not check_files(target, existing, full=True):
        same = existing.get("files") == (read_manifest(bundle) or {}).get("files")
        if same or not force:
            logger.info("tierlm cache: bundle %s already present%s", target.name[:12],
                        "" if same else " with different contents; use --force to replace it")
            return False
    if target.exists():
        trash = target.parent / f"{TRASH_PREFIX}{uuid.uuid4().hex}"
        with EvictionLock(target) as lock:
            if not lock.acquired:
                raise BundleError(f"bundle {target.name[:12]} is in use by a running process; not replacing it")
            os.rename(target, trash)
        remove_tree(trash)
    fsync_tree(bundle)
    os.rename(bundle, target)
    fsync_dir(target.parent)
    return True
