"""Helpers for cache-root tests: isolated environments and child processes that import tierlm fresh."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional

import pytest

from tierlm.cachedir import CacheRoot, resolve_root

HERE = Path(__file__).parent

# Variables that would leak the test runner's own cache settings into an isolated child.
_SCRUB = ("TIERLM_CACHE_DIR", "XDG_CACHE_HOME", "TIERLM_CACHE_OVERLAY_DIR", "TIERLM_CACHE_READONLY",
          "TIERLM_CACHE_REQUIRE_HIT", "TIERLM_AUTOTUNE_CACHE", "TIERLM_CACHE_MAX_GB")


def child_env(tmp: Path, **extra: str) -> Dict[str, str]:
    """Environment for a child: HOME and TMPDIR inside `tmp`, root at tmp/root unless overridden.

    Inherited third-party variables (set by tierlm in this test process) are deliberately kept: the
    child must recognise them as tierlm's own and recompute them for its root.
    """
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    for name in ("home", "tmpdir"):
        (tmp / name).mkdir(exist_ok=True)
    env.update(HOME=str(tmp / "home"), TMPDIR=str(tmp / "tmpdir"), TIERLM_CACHE_DIR=str(tmp / "root"))
    env.update(extra)
    return {k: v for k, v in env.items() if v is not None}


def run_script(script: str, *args: str, env: Dict[str, str], timeout: float = 120,
               check: bool = True) -> subprocess.CompletedProcess:
    """Run one of the helper scripts next to this file in a fresh interpreter."""
    proc = subprocess.run([sys.executable, str(HERE / script), *args], env=env, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} {args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def last_json(proc: subprocess.CompletedProcess) -> dict:
    """The last stdout line, parsed as JSON (helper scripts print their result there)."""
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def root(tmp_path: Path) -> CacheRoot:
    """A fresh writable cache root under tmp_path."""
    return resolve_root({"TIERLM_CACHE_DIR": str(tmp_path / "root"), "HOME": str(tmp_path / "home")})


def files_under(path: Path, skip_prefix: Optional[str] = None) -> Dict[str, float]:
    """{relative path: mtime} for every file under `path`."""
    out = {}
    for p in sorted(Path(path).rglob("*")):
        if p.is_file():
            out[p.relative_to(path).as_posix()] = p.stat().st_mtime
    return out
