"""Where the cache root is, what lives in it, and where writes go when it is read-only.

Resolution order for the root: ``TIERLM_CACHE_DIR``, else ``$XDG_CACHE_HOME/tierlm`` (absolute values
only, as the XDG spec says), else ``~/.cache/tierlm``. The temporary directory is never a default.

Each subsystem lives in a fixed subdirectory. Its location is, first match wins:
  1. the third-party variable (e.g. ``TRITON_CACHE_DIR``) when the *user* set it;
  2. ``TIERLM_<SUBSYS>_CACHE_DIR``;
  3. ``<overlay>/<subsys>`` when the root is read-only;
  4. ``<root>/<subsys>``.

A root is read-only when ``TIERLM_CACHE_READONLY=1``, when the process may not write it
(``os.access``: permissions for ordinary users, read-only mounts for everyone), or when its directory
carries no write bit at all (``chmod a-w``): root bypasses permission bits, so the mode is read as the
operator's intent. Writes then go to an overlay: ``TIERLM_CACHE_OVERLAY_DIR``, else
``$XDG_CACHE_HOME/tierlm-overlay`` / ``~/.cache/tierlm-overlay`` when writable. We never chmod.

A root, overlay or override that is not a directory (a regular file, or below one) is refused with
`NotADirectoryError` naming the variable: it is a mistake, not a read-only root, and treating it as
one silently sent every write elsewhere.
"""
from __future__ import annotations

import errno
import json
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Mapping, Optional, Tuple

SUBSYSTEMS: Tuple[str, ...] = (
    "triton", "inductor", "aot", "jit", "autotune", "cuda", "kv", "flashinfer", "deep_gemm")

# Subsystems whose layout belongs to a third-party library (we point it here, it manages the files).
THIRD_PARTY_SUBSYSTEMS: Tuple[str, ...] = ("triton", "inductor", "cuda", "flashinfer", "deep_gemm")

# Third-party variable -> (subsystem, path below the subsystem dir).
THIRD_PARTY_VARS: Mapping[str, Tuple[str, str]] = MappingProxyType({
    "TRITON_CACHE_DIR": ("triton", ""),
    "TORCHINDUCTOR_CACHE_DIR": ("inductor", ""),
    "CUDA_CACHE_PATH": ("cuda", ""),
    "TVM_FFI_CACHE_DIR": ("jit", "tvm-ffi"),
    "FLASHINFER_WORKSPACE_BASE": ("flashinfer", ""),  # FlashInfer appends .cache/flashinfer itself
    "DG_JIT_CACHE_DIR": ("deep_gemm", ""),
})

# Environment variable recording the third-party values `configure_environment` set, so a child
# process (which inherits them) can tell our values from a user's explicit choice.
WIRED_VAR = "TIERLM_CACHE_WIRED"


def override_var(subsystem: str) -> str:
    """Name of the per-subsystem override variable, e.g. ``TIERLM_TRITON_CACHE_DIR``."""
    return f"TIERLM_{subsystem.upper()}_CACHE_DIR"


def wired_values(environ: Mapping[str, str]) -> Mapping[str, str]:
    """Third-party values set by a previous `configure_environment` (this process or a parent)."""
    try:
        data = json.loads(environ.get(WIRED_VAR, "") or "{}")
        values = data.get("vars", {}) if isinstance(data, dict) else {}
        return {k: v for k, v in values.items() if isinstance(k, str) and isinstance(v, str)}
    except ValueError:
        return {}


def user_set_vars(environ: Mapping[str, str]) -> Mapping[str, str]:
    """Third-party variables present in `environ` that TierLM did not set itself."""
    ours = wired_values(environ)
    return {var: environ[var] for var in THIRD_PARTY_VARS
            if environ.get(var) and environ[var] != ours.get(var)}


def _home(environ: Mapping[str, str]) -> Path:
    home = environ.get("HOME")
    if home:
        return Path(home)
    return Path(pwd.getpwuid(os.getuid()).pw_dir)


def _user_cache_base(environ: Mapping[str, str]) -> Tuple[Path, str]:
    xdg = environ.get("XDG_CACHE_HOME", "")
    if xdg and os.path.isabs(xdg):
        return Path(xdg), "XDG_CACHE_HOME"
    return _home(environ) / ".cache", "HOME"


def is_writable(path: Path, environ: Optional[Mapping[str, str]] = None) -> bool:
    """Whether TierLM may write at `path` (or create it): checks the nearest existing ancestor."""
    env = os.environ if environ is None else environ
    if env.get("TIERLM_CACHE_READONLY", "") not in ("", "0"):
        return False
    probe = Path(os.path.abspath(path))
    while not probe.exists():
        if probe.parent == probe:
            return False
        probe = probe.parent
    try:
        mode = probe.stat().st_mode
    except OSError:
        return False
    if not stat.S_ISDIR(mode) or not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
        return False
    return os.access(probe, os.W_OK | os.X_OK)


@dataclass(frozen=True)
class SubsystemLocation:
    """Where one subsystem's files are read and written, and which setting decided it (for operators)."""

    name: str
    path: Path
    source: str
    read_paths: Tuple[Path, ...]


@dataclass(frozen=True)
class CacheRoot:
    """The resolved cache root: its path, how it was chosen, and the writable overlay if it is read-only.

    Immutable and cheap to build; resolve it again (``resolve_root()``) after changing the environment.
    """

    path: Path
    source: str
    read_only: bool = False
    overlay: Optional[Path] = None
    overrides: Tuple[Tuple[str, str, str, bool], ...] = ()  # (subsystem, path, source, is third-party var)

    @property
    def write_base(self) -> Optional[Path]:
        """Directory that receives writes: the root, or the overlay when read-only (None: nowhere)."""
        return self.overlay if self.read_only else self.path

    def locate(self, subsystem: str, third_party: bool = True) -> SubsystemLocation:
        """Where `subsystem` lives and why (explicit variable, override, overlay or the root).

        With ``third_party=False`` a user's third-party variable is ignored: the place TierLM itself
        would use.
        """
        check_subsystem(subsystem)
        for name, path, source, is_third_party in self.overrides:
            if name == subsystem and (third_party or not is_third_party):
                return SubsystemLocation(subsystem, Path(path), source, (Path(path),))
        in_root = self.path / subsystem
        if not self.read_only:
            return SubsystemLocation(subsystem, in_root, "root", (in_root,))
        if self.overlay is None:
            return SubsystemLocation(subsystem, in_root, "root (read-only, no writable overlay)", (in_root,))
        over = self.overlay / subsystem
        return SubsystemLocation(subsystem, over, "overlay (root is read-only)", (over, in_root))

    def subsystem_dir(self, subsystem: str) -> Path:
        """Directory where `subsystem` writes (and first reads)."""
        return self.locate(subsystem).path

    def read_dirs(self, subsystem: str) -> Tuple[Path, ...]:
        """Directories searched for existing entries, writable one first."""
        return self.locate(subsystem).read_paths

    def writable(self, subsystem: str) -> bool:
        """Whether TierLM may write the subsystem's directory (never inside a read-only root)."""
        loc = self.locate(subsystem)
        if loc.source.startswith("root") and self.read_only:
            return False
        return is_writable(loc.path)

    def require_writable(self, subsystem: str, what: str) -> Path:
        """The subsystem's write directory, or OSError(EROFS) naming the setting to fix."""
        if not self.writable(subsystem):
            raise OSError(errno.EROFS, f"cannot write {what}: {self.subsystem_dir(subsystem)} is read-only "
                                       "and no writable overlay exists (set TIERLM_CACHE_OVERLAY_DIR)")
        return self.subsystem_dir(subsystem)


def check_subsystem(name: str) -> str:
    """Validate a subsystem name; raises ValueError listing the known ones."""
    if name not in SUBSYSTEMS:
        raise ValueError(f"unknown cache subsystem {name!r}; known: {', '.join(SUBSYSTEMS)}")
    return name


def require_directory(path: Path, var: str, derived_from: Optional[str] = None) -> Path:
    """`path` if it is a directory or can become one; else NotADirectoryError naming the variable.

    `var` is the variable that set `path`, or with `derived_from` the one to set instead (the root
    derived from ``HOME`` or ``XDG_CACHE_HOME``).
    """
    path = Path(os.path.abspath(path))
    probe = path
    while not os.path.lexists(probe) and probe.parent != probe:
        probe = probe.parent
    if not os.path.lexists(probe) or probe.is_dir():
        return path
    what = "is not a directory" if probe == path else f"is inside {probe}, which is not a directory"
    if derived_from:
        raise NotADirectoryError(f"the cache root {path} (from {derived_from}) {what}; "
                                 f"set {var} to a directory")
    raise NotADirectoryError(f"{var}={path} {what}; point {var} at a directory")


def resolve_root(environ: Optional[Mapping[str, str]] = None) -> CacheRoot:
    """Resolve the cache root from `environ` (default: the process environment).

    Raises NotADirectoryError (naming the variable) when the root, overlay or an override is a file.
    """
    env = os.environ if environ is None else environ
    explicit = env.get("TIERLM_CACHE_DIR", "")
    if explicit:
        path, source = Path(os.path.abspath(os.path.expanduser(explicit))), "TIERLM_CACHE_DIR"
        require_directory(path, "TIERLM_CACHE_DIR")
    else:
        base, source = _user_cache_base(env)
        path = Path(os.path.abspath(base / "tierlm"))
        require_directory(path, "TIERLM_CACHE_DIR", derived_from=source)
    read_only = not is_writable(path, env)
    overlay = _overlay(path, env) if read_only else None
    overrides = []
    user_vars = user_set_vars(env)
    for subsystem in SUBSYSTEMS:
        var_hits = [v for v, (s, suffix) in THIRD_PARTY_VARS.items() if s == subsystem and not suffix]
        user = next((v for v in var_hits if v in user_vars), None)
        if user:
            overrides.append((subsystem, os.path.abspath(user_vars[user]), f"{user} (set by user)", True))
        if env.get(override_var(subsystem)):
            value = os.path.abspath(os.path.expanduser(env[override_var(subsystem)]))
            require_directory(Path(value), override_var(subsystem))
            overrides.append((subsystem, value, override_var(subsystem), False))
    return CacheRoot(path=path, source=source, read_only=read_only, overlay=overlay,
                     overrides=tuple(overrides))


def _overlay(root: Path, env: Mapping[str, str]) -> Optional[Path]:
    explicit = env.get("TIERLM_CACHE_OVERLAY_DIR", "")
    if explicit:
        return require_directory(Path(os.path.abspath(os.path.expanduser(explicit))), "TIERLM_CACHE_OVERLAY_DIR")
    try:
        base, _ = _user_cache_base(env)
    except (KeyError, OSError):
        return None
    candidate = Path(os.path.abspath(base / "tierlm-overlay"))
    if candidate == root or root in candidate.parents:
        return None
    # Writability of the overlay is judged without the read-only switch, which targets the root.
    probe_env = {k: v for k, v in env.items() if k != "TIERLM_CACHE_READONLY"}
    return candidate if is_writable(candidate, probe_env) else None


def cache_root() -> Path:
    """Path of the cache root for the current environment (it may not exist yet)."""
    return resolve_root().path


def subsystem_dir(name: str, environ: Optional[Mapping[str, str]] = None) -> Path:
    """Directory where subsystem `name` reads and writes, honouring overrides and the overlay."""
    return resolve_root(environ).subsystem_dir(name)
