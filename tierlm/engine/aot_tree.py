"""The AOT tree of one engine configuration: ``aot/<key>/`` in the cache root, per model and rank.

An engine opens its tree before anything compiles whenever it compiles something: with --compile (the
saved forward, ``precompiled/forward.bin``, and the kernels Inductor builds for it) and on CUDA (TierLM's own
Triton kernels and their autotune results). Opening activates it (`AotBundle.activate`): Inductor's cache,
Triton's cache (nested in Inductor's) and, during start-up, the autotune store then live inside it, so the
one directory is everything this configuration compiled. Start-up seals it (a manifest with the sha256 of
every file) once complete, and again when a later start added files; `tierlm cache export|import` move it.

The key hashes what changes the compiled code and nothing else: the model's architecture and config (not
its name or path: identical configs share code), dtype, device kind and arch, tensor-parallel size and rank,
the compile options, torch/triton/python versions and the source of the code that gets traced. Never a path
or a host name.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Optional

import torch

from tierlm.cachedir import AotBundle, environment_fingerprint
from tierlm.cachedir.fsutil import iter_files
from tierlm.cachedir.root import override_var
from tierlm.config import EngineConfig
from tierlm.engine.compile import OPTIONS
from tierlm.models.config import ModelConfig

logger = logging.getLogger(__name__)

PACKAGE = Path(__file__).resolve().parents[1]
# Code whose source the compiled graph is traced from (a change there must not load a stale graph).
TRACED_SOURCES = ("models", "layers", "kernels", "attention", "engine/compile.py")
KERNEL_SUFFIXES = (".so", ".cubin", ".hsaco")  # one per compiled kernel (Inductor C++, Triton)
_UNKEYED = ("_name_or_path", "transformers_version")  # config.json fields that change no compiled code


def code_digest() -> str:
    """sha256 (16 hex digits) of the traced sources: relative paths and contents."""
    h = hashlib.sha256()
    for rel in TRACED_SOURCES:
        base = PACKAGE / rel
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*.py") if "__pycache__" not in p.parts)
        for path in files:
            h.update(path.relative_to(PACKAGE).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def device_facts(device: torch.device, compile: bool) -> dict[str, Any]:
    """Arch facts of the device that compiled code depends on (recorded in the tree's environment too)."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return {"device_arch": f"sm{props.major}{props.minor}", "device_name": props.name}
    facts: dict[str, Any] = {"device_arch": device.type}
    if compile and device.type == "cpu":  # Inductor's C++ kernels are built for the host's vector ISA
        facts["device_arch"] = f"cpu-{torch.backends.cpu.get_cpu_capability().lower()}"
    return facts


def key_factors(config: EngineConfig, model_cfg: ModelConfig, device: torch.device, dtype: torch.dtype,
                max_positions: int, facts: dict[str, Any]) -> dict[str, Any]:
    """What the tree's key hashes (see the module docstring)."""
    raw = {k: v for k, v in model_cfg.raw.items() if k not in _UNKEYED}
    blob = json.dumps(raw, sort_keys=True, separators=(",", ":"), default=str).encode()
    return {
        "model": {"architecture": model_cfg.architecture, "config_sha256": hashlib.sha256(blob).hexdigest()[:16]},
        "dtype": str(dtype).replace("torch.", ""),
        "device": device.type,
        "device_arch": facts["device_arch"],
        "tp_size": config.tp_size,  # --compile is single-rank for now (EngineConfig.validate)
        "max_positions": max_positions,  # the rotary tables' shape is baked into the compiled graph
        "compile": dict(OPTIONS) if config.compile else None,
        "torch": torch.__version__,
        "triton": environment_fingerprint()["triton"],
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "tierlm_code": code_digest() if config.compile else None,  # Triton keys its own kernels by source
    }


def kernel_files(path: Path) -> set[str]:
    """Relative paths of the compiled kernel binaries under `path`."""
    if not path.is_dir():
        return set()
    return {p.relative_to(path).as_posix() for p in iter_files(path) if p.name.endswith(KERNEL_SUFFIXES)}


def _listing(path: Path) -> dict[str, int]:
    return {p.relative_to(path).as_posix(): p.stat().st_size for p in iter_files(path)
            if not p.name.startswith(".tierlm")}


class AotTree:
    """The opened, active tree of this engine: where the saved forward goes, and what this start added."""

    def __init__(self, bundle: AotBundle, autotune_before: Optional[str] = None) -> None:
        self.bundle = bundle
        self._autotune_before = autotune_before  # the autotune store's override before activation
        self.was_sealed = bundle.sealed
        self._kernels_at_open = kernel_files(bundle.path)
        self._files_at_open = _listing(bundle.path)

    @property
    def key(self) -> str:
        return self.bundle.key

    @property
    def path(self) -> Path:
        return self.bundle.path

    @property
    def forward_artifact(self) -> Path:
        """Where the ahead-of-time compiled forward is saved."""
        return self.bundle.path / "precompiled" / "forward.bin"

    def new_kernels(self) -> list[str]:
        """Names of the kernel binaries compiled into the tree since it was opened (sorted; one per binary)."""
        return sorted(Path(p).stem for p in kernel_files(self.bundle.path) - self._kernels_at_open)

    def end_startup(self) -> None:
        """Give the autotune store its own directory back: tuning happens only during start-up, and the
        override must not outlive this engine's start in the process (Inductor's and Triton's stay: kernels
        may still compile later)."""
        var = override_var("autotune")
        if self._autotune_before is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = self._autotune_before

    def seal(self) -> bool:
        """Seal the tree unless it is sealed and this start changed nothing in it; True when sealed now."""
        if self.was_sealed and self.bundle.sealed and _listing(self.bundle.path) == self._files_at_open:
            return False
        try:
            self.bundle.seal()
        except OSError as e:
            logger.warning("tierlm cache: could not seal the AOT tree %s (%s)", self.bundle.path, e)
            return False
        self.was_sealed, self._files_at_open = True, _listing(self.bundle.path)
        return True


def pin_triton_toolchain(environ: Optional[dict] = None) -> None:
    """Make every --compile process build Triton kernels with the same ptxas, so they share cache entries.

    Inductor points Triton at the ptxas that ships with torch the first time it compiles a kernel (and
    Triton keys its cache by the ptxas version): without this, the kernels a cold start builds after
    compiling the forward would not be found by a warm start, which loads the forward and compiles nothing
    with Inductor. Setting the same path before anything compiles keeps the keys equal in both.
    """
    env = os.environ if environ is None else environ
    if env.get("TRITON_PTXAS_PATH"):
        return
    ptxas = Path(torch.__file__).resolve().parent / "bin" / "ptxas"
    if ptxas.is_file() and os.access(ptxas, os.X_OK):
        env["TRITON_PTXAS_PATH"] = str(ptxas)


def open_tree(config: EngineConfig, model_cfg: ModelConfig, device: torch.device, dtype: torch.dtype,
              max_positions: int) -> Optional[AotTree]:
    """Open and activate this configuration's tree with --compile; None without it (kernels then go where they
    always went in the cache root) or when no tree can be written (then compiled code lives in this process
    only, with a warning)."""
    if not config.compile:
        return None
    facts = device_facts(device, config.compile)
    factors = key_factors(config, model_cfg, device, dtype, max_positions, facts)
    try:
        bundle = AotBundle.open(factors, device=facts)
    except OSError as e:
        logger.warning("tierlm cache: no writable AOT tree (%s); compiled code is not kept after this process", e)
        return None
    autotune_before = os.environ.get(override_var("autotune"))
    if device.type == "cuda":
        pin_triton_toolchain()
    bundle.activate()
    tree = AotTree(bundle, autotune_before)
    logger.info("AOT tree %s (%s): %s", bundle.key[:12], "sealed" if tree.was_sealed else "new", bundle.path)
    return tree
