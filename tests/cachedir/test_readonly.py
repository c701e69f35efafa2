"""A pre-seeded root made read-only (chmod a-w) keeps serving hits; writes go to the overlay; nothing in
the root changes; TIERLM_CACHE_REQUIRE_HIT=1 names the subsystem and key factors of a miss.

Tests run as root here, and root ignores permission bits: the root really stays writable for the OS. The
test therefore checks TierLM's own decision (mode bits are read as the operator's intent) and asserts on
the filesystem that not a single file in the root was created or modified.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tierlm.cachedir import AutotuneStore, get_or_build, resolve_root

from .conftest import child_env, files_under, last_json, run_script


def _chmod_tree(path: Path, dir_mode: int, file_mode: int) -> None:
    for p in [path, *path.rglob("*")]:
        p.chmod(dir_mode if p.is_dir() else file_mode)


def test_read_only_root_serves_hits_and_writes_to_overlay(tmp_path):
    seeded_root = tmp_path / "seeded"
    root = resolve_root({"TIERLM_CACHE_DIR": str(seeded_root)})
    get_or_build("jit", "cpu/rms", {"src": "v1", "arch": "cpu"},
                 lambda s: (s / "kernel.so").write_bytes(b"seeded"), root=root).release()
    AutotuneStore(root=root).save("mm", {"arch": "cpu"}, {"block": 64})
    _chmod_tree(seeded_root, 0o555, 0o444)
    before = files_under(seeded_root)
    try:
        env = child_env(tmp_path, TIERLM_CACHE_DIR=str(seeded_root),
                        TIERLM_CACHE_OVERLAY_DIR=str(tmp_path / "overlay"))
        out = last_json(run_script("_readonly_worker.py", env=env))
        assert out["read_only"] and out["overlay"] == str(tmp_path / "overlay")
        assert out["seeded_hit"] and Path(out["seeded"]).is_relative_to(seeded_root)
        assert Path(out["fresh"]).is_relative_to(tmp_path / "overlay" / "jit")
        assert out["tuned"] == {"block": 64}
        assert out["inductor"] == str(tmp_path / "overlay" / "inductor")
        assert "'jit'" in out["miss"] and '"src": "v3"' in out["miss"] and "REQUIRE_HIT" in out["miss"]
        # `tierlm cache path` reports the overlay
        cli = subprocess.run([sys.executable, "-m", "tierlm.cli.main", "cache", "path"], env=env,
                             capture_output=True, text=True, check=True).stdout
        assert "read-only: yes" in cli and str(tmp_path / "overlay") in cli
        jit = subprocess.run([sys.executable, "-m", "tierlm.cli.main", "cache", "path", "jit"], env=env,
                             capture_output=True, text=True, check=True).stdout.strip()
        assert jit == str(tmp_path / "overlay" / "jit")
        # gc / verify / clear on the read-only root touch nothing there
        for args in (["gc", "--max-size", "0"], ["verify"], ["clear", "--yes"]):
            subprocess.run([sys.executable, "-m", "tierlm.cli.main", "cache", *args], env=env,
                           capture_output=True, text=True)
        assert files_under(seeded_root) == before, "the read-only root must not change"
    finally:
        _chmod_tree(seeded_root, 0o755, 0o644)


def test_read_only_root_without_overlay_refuses_to_write(tmp_path):
    seeded = tmp_path / "seeded"
    seeded.mkdir()
    seeded.chmod(0o555)
    try:
        root = resolve_root({"TIERLM_CACHE_DIR": str(seeded), "HOME": str(seeded)})
        assert root.read_only and root.overlay is None
        try:
            get_or_build("jit", "k", {"v": 1}, lambda s: None, root=root)
            raise AssertionError("expected OSError")
        except OSError as e:
            assert "TIERLM_CACHE_OVERLAY_DIR" in str(e)
        assert os.listdir(seeded) == []
    finally:
        seeded.chmod(0o755)
