"""Root resolution matrix: TIERLM_CACHE_DIR, XDG_CACHE_HOME, HOME, per-subsystem overrides, user-set
third-party variables, and read-only detection with its overlay."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from tierlm.cachedir import SUBSYSTEMS, configure_environment, resolve_root, subsystem_dir
from tierlm.cachedir.root import WIRED_VAR, is_writable


def test_explicit_root_wins_over_xdg_and_home(tmp_path):
    env = {"TIERLM_CACHE_DIR": str(tmp_path / "c"), "XDG_CACHE_HOME": str(tmp_path / "x"),
           "HOME": str(tmp_path / "h")}
    root = resolve_root(env)
    assert root.path == tmp_path / "c" and root.source == "TIERLM_CACHE_DIR"


def test_xdg_then_home(tmp_path):
    root = resolve_root({"XDG_CACHE_HOME": str(tmp_path / "x"), "HOME": str(tmp_path / "h")})
    assert root.path == tmp_path / "x" / "tierlm" and root.source == "XDG_CACHE_HOME"
    root = resolve_root({"HOME": str(tmp_path / "h")})
    assert root.path == tmp_path / "h" / ".cache" / "tierlm" and root.source == "HOME"
    # The XDG spec says relative values are invalid: ignored.
    root = resolve_root({"XDG_CACHE_HOME": "rel/dir", "HOME": str(tmp_path / "h")})
    assert root.path == tmp_path / "h" / ".cache" / "tierlm"


def test_relative_and_tilde_root_are_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_root({"TIERLM_CACHE_DIR": "rel"}).path == tmp_path / "rel"
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert resolve_root({"TIERLM_CACHE_DIR": "~/c"}).path == tmp_path / "h" / "c"


def test_default_is_never_the_temp_dir(tmp_path):
    root = resolve_root({"HOME": str(tmp_path / "h"), "TMPDIR": str(tmp_path / "t")})
    assert Path(str(tmp_path / "t")) not in root.path.parents


def test_fixed_layout(tmp_path):
    root = resolve_root({"TIERLM_CACHE_DIR": str(tmp_path)})
    for s in ("triton", "inductor", "aot", "jit", "autotune", "cuda", "kv", "flashinfer", "deep_gemm"):
        assert s in SUBSYSTEMS
        assert root.subsystem_dir(s) == tmp_path / s
        assert root.locate(s).source == "root"
    with pytest.raises(ValueError, match="unknown cache subsystem"):
        root.subsystem_dir("nope")


def test_per_subsystem_override(tmp_path):
    env = {"TIERLM_CACHE_DIR": str(tmp_path / "c"), "TIERLM_JIT_CACHE_DIR": str(tmp_path / "fastdisk")}
    root = resolve_root(env)
    assert root.subsystem_dir("jit") == tmp_path / "fastdisk"
    assert root.locate("jit").source == "TIERLM_JIT_CACHE_DIR"
    assert subsystem_dir("autotune", env) == tmp_path / "c" / "autotune"


def test_user_set_third_party_variable_wins_over_override(tmp_path):
    env = {"TIERLM_CACHE_DIR": str(tmp_path / "c"), "TRITON_CACHE_DIR": str(tmp_path / "mine"),
           "TIERLM_TRITON_CACHE_DIR": str(tmp_path / "override")}
    loc = resolve_root(env).locate("triton")
    assert loc.path == tmp_path / "mine"
    assert loc.source == "TRITON_CACHE_DIR (set by user)"


def test_values_wired_by_tierlm_are_not_mistaken_for_user_settings(tmp_path):
    # A child inherits TRITON_CACHE_DIR that a parent's tierlm set; the marker says it is ours.
    parent_value = str(tmp_path / "parent" / "triton")
    env = {"TIERLM_CACHE_DIR": str(tmp_path / "child"), "TRITON_CACHE_DIR": parent_value,
           WIRED_VAR: json.dumps({"vars": {"TRITON_CACHE_DIR": parent_value}})}
    loc = resolve_root(env).locate("triton")
    assert loc.path == tmp_path / "child" / "triton" and loc.source == "root"


def test_readonly_switch_and_overlay(tmp_path):
    env = {"TIERLM_CACHE_DIR": str(tmp_path / "c"), "TIERLM_CACHE_READONLY": "1",
           "TIERLM_CACHE_OVERLAY_DIR": str(tmp_path / "ov")}
    root = resolve_root(env)
    assert root.read_only and root.overlay == tmp_path / "ov"
    loc = root.locate("jit")
    assert loc.path == tmp_path / "ov" / "jit"
    assert loc.read_paths == (tmp_path / "ov" / "jit", tmp_path / "c" / "jit")
    assert "overlay" in loc.source


def test_chmod_a_w_root_is_read_only_even_for_root_user(tmp_path):
    seeded = tmp_path / "seeded"
    seeded.mkdir()
    seeded.chmod(0o555)
    try:
        env = {"TIERLM_CACHE_DIR": str(seeded), "HOME": str(tmp_path / "h")}
        root = resolve_root(env)
        assert root.read_only
        # Default overlay: the user's cache dir, next to (not inside) the default root.
        assert root.overlay == tmp_path / "h" / ".cache" / "tierlm-overlay"
    finally:
        seeded.chmod(0o755)


def test_not_writable_per_os_access_is_read_only(tmp_path, monkeypatch):
    # What an ordinary user on a 0555 directory, or anyone on a read-only mount (EROFS), gets.
    (tmp_path / "ro").mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, m: False if Path(p) == tmp_path / "ro" else real_access(p, m))
    assert not is_writable(tmp_path / "ro")
    assert not is_writable(tmp_path / "ro" / "not" / "yet" / "created")
    assert is_writable(tmp_path / "rw" / "new")
    root = resolve_root({"TIERLM_CACHE_DIR": str(tmp_path / "ro"), "HOME": str(tmp_path / "h")})
    assert root.read_only


def test_read_only_root_without_any_writable_place_has_no_overlay(tmp_path):
    home = tmp_path / "h"
    home.mkdir()
    home.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        root = resolve_root({"HOME": str(home)})
        assert root.read_only and root.overlay is None and root.write_base is None
    finally:
        home.chmod(0o755)


@pytest.mark.parametrize("where", ["root", "below a file"])
def test_root_that_is_a_file_is_refused_naming_the_variable(tmp_path, where):
    (tmp_path / "f").write_text("not a directory")
    path = tmp_path / "f" if where == "root" else tmp_path / "f" / "cache"
    with pytest.raises(NotADirectoryError, match=f"TIERLM_CACHE_DIR={path} "):
        resolve_root({"TIERLM_CACHE_DIR": str(path), "HOME": str(tmp_path / "h")})


def test_default_root_inside_a_file_names_home_and_the_variable_to_set(tmp_path):
    (tmp_path / "h").write_text("")
    with pytest.raises(NotADirectoryError, match=r"\(from HOME\).*set TIERLM_CACHE_DIR"):
        resolve_root({"HOME": str(tmp_path / "h")})


@pytest.mark.parametrize("var", ["TIERLM_CACHE_OVERLAY_DIR", "TIERLM_JIT_CACHE_DIR"])
def test_overlay_or_override_that_is_a_file_is_refused(tmp_path, var):
    (tmp_path / "f").write_text("")
    env = {"TIERLM_CACHE_DIR": str(tmp_path / "c"), "TIERLM_CACHE_READONLY": "1", var: str(tmp_path / "f")}
    with pytest.raises(NotADirectoryError, match=var):
        resolve_root(env)


def test_configure_environment_warns_and_sets_nothing_for_a_file_root(tmp_path, caplog):
    (tmp_path / "f").write_text("")
    env = {"TIERLM_CACHE_DIR": str(tmp_path / "f")}
    assert configure_environment(env) is None
    assert "TRITON_CACHE_DIR" not in env and "TIERLM_CACHE_DIR=" in caplog.text
