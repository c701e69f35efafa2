"""Persistent autotune results: ``autotune/<kernel>/<fingerprint>.json``, reused by default.

With ``TIERLM_AUTOTUNE_CACHE=0`` (or ``reuse=False``) every tuning runs afresh and its result goes to
``autotune/runs/<kernel>.<YYYYmmdd_HHMMSS>-<pid>.json``: the canonical file is left byte-for-byte
untouched and run files are never read back by the engine. ``promote(run)`` (``tierlm cache promote``)
adopts a run as the canonical result, first keeping the result it replaces as a new run file. Each
file records what was tuned (factors, including the measurement policy if the caller has one) and the
environment (device, torch, triton, tierlm).
"""
from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import re
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

from tierlm.cachedir.fingerprint import environment_fingerprint
from tierlm.cachedir.fsutil import RESERVED_PREFIX, atomic_write_bytes
from tierlm.cachedir.root import CacheRoot, resolve_root

logger = logging.getLogger(__name__)

AUTOTUNE_FORMAT = "tierlm-autotune/1"
RUNS_DIR = "runs"
_KERNEL_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")


def reuse_enabled(environ: Optional[Mapping[str, str]] = None) -> bool:
    """False when ``TIERLM_AUTOTUNE_CACHE`` is 0/false/off/no."""
    env = os.environ if environ is None else environ
    return env.get("TIERLM_AUTOTUNE_CACHE", "1").strip().lower() not in ("0", "false", "off", "no")


def fingerprint_of(factors: Mapping[str, Any]) -> str:
    """File-name fingerprint (24 hex chars) of the tuning factors' canonical JSON."""
    blob = json.dumps(factors, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _check_kernel(kernel: str) -> str:
    if not _KERNEL_RE.match(kernel) or kernel == RUNS_DIR:
        raise ValueError(f"invalid autotune kernel name {kernel!r}")
    return kernel


def read_result(path: Path) -> Optional[Dict[str, Any]]:
    """Parse an autotune file; None (with a warning) if it is unreadable or not ours."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        logger.warning("autotune: ignoring unreadable %s (%s)", path, e)
        return None
    if not isinstance(data, dict) or data.get("format") != AUTOTUNE_FORMAT or not isinstance(
            data.get("results"), dict) or not _KERNEL_RE.match(str(data.get("kernel", ""))):
        logger.warning("autotune: ignoring %s (not a TierLM autotune file)", path)
        return None
    return data


class AutotuneStore:
    """Load/save tuned configurations per kernel and tuning fingerprint, honouring the reuse switch.

    `device` (name, arch) is recorded in each file's metadata; pass the same facts in `factors` if
    results must not be shared across devices (normally they must not: include the arch).
    """

    def __init__(self, root: Optional[CacheRoot] = None, reuse: Optional[bool] = None,
                 device: Optional[Mapping[str, Any]] = None) -> None:
        self.root = root or resolve_root()
        self.reuse = reuse_enabled() if reuse is None else reuse
        self.device = dict(device or {})

    @property
    def directory(self) -> Path:
        """Directory that receives writes."""
        return self.root.subsystem_dir("autotune")

    def canonical_path(self, kernel: str, factors: Mapping[str, Any]) -> Path:
        """Where the canonical result for (kernel, factors) lives in the writable directory."""
        return self.directory / _check_kernel(kernel) / f"{fingerprint_of(factors)}.json"

    def load(self, kernel: str, factors: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
        """The canonical results, or None on a miss or when reuse is off (runs are never read)."""
        if not self.reuse:
            return None
        name = f"{fingerprint_of(factors)}.json"
        for base in self.root.read_dirs("autotune"):
            path = base / _check_kernel(kernel) / name
            if path.is_file():
                data = read_result(path)
                if data is not None and data.get("kernel") == kernel:
                    logger.info("autotune: %s uses %s", kernel, path)
                    return dict(data["results"])
        return None

    def save(self, kernel: str, factors: Mapping[str, Any], results: Mapping[str, Any]) -> Path:
        """Store `results`: canonical file when reuse is on, a new ``runs/`` file when it is off."""
        body = {
            "format": AUTOTUNE_FORMAT, "kernel": _check_kernel(kernel), "fingerprint": fingerprint_of(factors),
            "factors": dict(factors), "results": dict(results),
            "metadata": {**environment_fingerprint(self.device),
                         "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")},
        }
        data = json.dumps(body, indent=1, sort_keys=True).encode()
        self.root.require_writable("autotune", f"autotune results for {kernel}")
        if self.reuse:
            path = atomic_write_bytes(self.canonical_path(kernel, factors), data)
            logger.info("autotune: wrote %s results to %s", kernel, path)
            return path
        path = self._new_run_file(kernel, data)
        logger.info("autotune: reuse disabled (TIERLM_AUTOTUNE_CACHE=0); wrote fresh %s results to %s",
                    kernel, path)
        return path

    def _new_run_file(self, kernel: str, data: bytes) -> Path:
        runs = self.directory / RUNS_DIR
        runs.mkdir(parents=True, exist_ok=True)
        stem = f"{kernel}.{datetime.datetime.now().strftime('%Y%m%d_%H%M%S')}-{os.getpid()}"
        tmp = atomic_write_bytes(runs / f"{RESERVED_PREFIX}run-{uuid.uuid4().hex}", data)
        try:
            for n in range(1, 1000):
                target = runs / (f"{stem}.json" if n == 1 else f"{stem}-{n}.json")
                try:
                    os.link(tmp, target)  # fails if the name exists: never clobbers another run
                    return target
                except FileExistsError:
                    continue
            raise OSError(f"too many autotune runs named {stem}*")
        finally:
            tmp.unlink()

    def get_or_tune(self, kernel: str, factors: Mapping[str, Any],
                    tune_fn: Callable[[], Mapping[str, Any]]) -> Dict[str, Any]:
        """Reuse stored results if allowed, else call `tune_fn()` and save what it returns."""
        found = self.load(kernel, factors)
        if found is not None:
            return found
        logger.info("autotune: tuning %s (%s)", kernel, "no stored result" if self.reuse else "reuse disabled")
        results = dict(tune_fn())
        try:
            self.save(kernel, factors, results)
        except OSError as e:
            logger.warning("autotune: could not store %s results (%s); using them for this process only", kernel, e)
        return results

    def runs(self) -> List[Path]:
        """Run files written with reuse off, oldest first."""
        runs = self.directory / RUNS_DIR
        if not runs.is_dir():
            return []
        return sorted((p for p in runs.glob("*.json") if not p.name.startswith(".")),
                      key=lambda p: (p.stat().st_mtime, p.name))

    def results(self) -> List[Path]:
        """Canonical result files (``<kernel>/<fingerprint>.json``) in every read directory, writable first."""
        found: List[Path] = []
        for base in self.root.read_dirs("autotune"):
            if base.is_dir():
                found.extend(sorted(p for p in base.glob("*/*.json")
                                    if p.parent.name != RUNS_DIR and not p.name.startswith(".")))
        return found

    def promote(self, run: Union[str, Path]) -> Path:
        """Adopt a run file (path, or name under ``runs/``) as the canonical result; returns its path.

        A different canonical result already there is first kept as a new run file (see
        `promote_with_backup`), so a promotion can be undone by promoting that file.
        """
        return self.promote_with_backup(run)[0]

    def promote_with_backup(self, run: Union[str, Path]) -> Tuple[Path, Optional[Path]]:
        """`promote`, also returning the run file that keeps the replaced canonical result (None if none)."""
        path = Path(run)
        if not path.is_file():
            path = self.directory / RUNS_DIR / str(run)
            if not path.is_file() and not str(run).endswith(".json"):
                path = path.with_name(path.name + ".json")
        if not path.is_file():
            raise FileNotFoundError(f"no autotune run {run!r} (looked in {self.directory / RUNS_DIR})")
        data = read_result(path)
        if data is None or not re.fullmatch(r"[0-9a-f]{24}", str(data.get("fingerprint", ""))):
            raise ValueError(f"{path} is not a TierLM autotune result")
        self.root.require_writable("autotune", f"the promoted {data['kernel']} result")
        target = self.directory / data["kernel"] / f"{data['fingerprint']}.json"
        new = path.read_bytes()
        backup = None
        try:
            old = target.read_bytes()
        except FileNotFoundError:
            old = new
        if old != new:
            backup = self._new_run_file(data["kernel"], old)
        atomic_write_bytes(target, new)
        logger.info("autotune: promoted %s to %s%s", path, target,
                    f"; the result it replaced is kept as run {backup.name}" if backup else "")
        return target, backup
