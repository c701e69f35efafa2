"""`get_or_build`: atomic publish, one builder among many processes, crash safety, checks on load."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tierlm.cachedir import CacheMissError, entry_key, get_or_build, lookup, resolve_root
from tierlm.cachedir.manifest import MANIFEST_NAME

from .conftest import HERE, child_env

FACTORS = {"source_sha256": "0" * 64, "arch": "cpu", "flags": ["-O2"]}  # same as _build_worker.py


def _writer(text: str, calls: list):
    def build(staging: Path) -> None:
        calls.append(staging)
        (staging / "sub").mkdir()
        (staging / "sub" / "a.txt").write_text(text)
    return build


def test_build_then_hit_with_manifest(root):
    calls: list = []
    e1 = get_or_build("jit", "cpu/add", {"src": "x"}, _writer("hello", calls), root=root)
    e2 = get_or_build("jit", "cpu/add", {"src": "x"}, _writer("other", calls), root=root)
    assert len(calls) == 1 and not e1.hit and e2.hit and e1.path == e2.path
    assert e1.path == root.subsystem_dir("jit") / "cpu" / "add" / entry_key("jit", "cpu/add", {"src": "x"})
    assert (Path(os.fspath(e2)) / "sub" / "a.txt").read_text() == "hello"
    manifest = json.loads((e1.path / MANIFEST_NAME).read_text())
    assert manifest["factors"] == {"src": "x"} and manifest["subsystem"] == "jit"
    assert list(manifest["files"]) == ["sub/a.txt"]  # relative, bookkeeping excluded
    assert len(manifest["files"]["sub/a.txt"]["sha256"]) == 64
    # nothing but the entry and the lock directory is left next to it
    assert sorted(p.name for p in e1.path.parent.iterdir()) == [".tierlm-locks", e1.key]


def test_key_depends_on_declared_factors_only(root):
    assert entry_key("jit", "m", {"a": 1, "b": [1, 2]}) == entry_key("jit", "m", {"b": [1, 2], "a": 1})
    assert entry_key("jit", "m", {"a": 1}) != entry_key("jit", "m", {"a": 2})
    assert entry_key("jit", "m", {"a": 1}) != entry_key("jit", "n", {"a": 1})


def test_machine_paths_in_factors_are_refused(root):
    with pytest.raises(ValueError, match="machine path"):
        get_or_build("jit", "m", {"include": [str(root.path / "x.h")]}, _writer("", []), root=root)
    with pytest.raises(ValueError, match="invalid cache entry name"):
        get_or_build("jit", "../escape", {}, _writer("", []), root=root)


def test_failed_build_leaves_nothing_visible(root):
    def boom(staging: Path) -> None:
        (staging / "half").write_text("x")
        raise RuntimeError("compiler crashed")
    with pytest.raises(RuntimeError):
        get_or_build("jit", "m", {"v": 1}, boom, root=root)
    parent = root.subsystem_dir("jit") / "m"
    assert [p.name for p in parent.iterdir()] == [".tierlm-locks"]
    assert lookup("jit", "m", {"v": 1}, root=root) is None


def test_eight_processes_one_build(tmp_path):
    env = child_env(tmp_path)
    log, barrier = tmp_path / "builds.log", tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, str(HERE / "_build_worker.py"), "build", str(log), str(barrier)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(8)]
    time.sleep(0.5)
    barrier.touch()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert len(log.read_text().splitlines()) == 1, "exactly one process must build"
    assert all(r["ok"] for r in results)
    assert len({r["path"] for r in results}) == 1
    assert sum(not r["hit"] for r in results) == 1  # the builder; the 7 others waited and loaded it
    entry = Path(results[0]["path"])
    assert not [p for p in entry.parent.iterdir() if p.name.startswith(".staging-")]


def test_sigkill_mid_build_leaves_no_partial_entry(tmp_path):
    env = child_env(tmp_path)
    log = tmp_path / "builds.log"
    p = subprocess.Popen([sys.executable, str(HERE / "_build_worker.py"), "hang", str(log)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    started = Path(str(log) + ".started")
    deadline = time.time() + 60
    while not started.exists():
        assert p.poll() is None and time.time() < deadline, p.stderr.read() if p.poll() is not None else "timeout"
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    root = resolve_root({"TIERLM_CACHE_DIR": env["TIERLM_CACHE_DIR"]})
    parent = root.subsystem_dir("jit") / "cpu" / "demo"
    assert not (parent / entry_key("jit", "cpu/demo", FACTORS)).exists()
    assert lookup("jit", "cpu/demo", FACTORS, root=root) is None
    # The next caller is not blocked by the dead builder's lock and rebuilds.
    calls: list = []

    def build(staging: Path) -> None:
        calls.append(1)
        (staging / "meta.txt").write_text("v1")
    entry = get_or_build("jit", "cpu/demo", FACTORS, build, root=root)
    assert calls == [1] and (entry.path / "meta.txt").read_text() == "v1"


def test_damaged_entry_is_quarantined_and_rebuilt_on_load(root):
    calls: list = []
    e = get_or_build("jit", "m", {"v": 1}, _writer("hello", calls), root=root)
    e.release()
    (e.path / "sub" / "a.txt").write_text("hellO")  # same size, different bytes
    e2 = get_or_build("jit", "m", {"v": 1}, _writer("hello", calls), root=root)
    assert len(calls) == 2 and not e2.hit
    assert (e2.path / "sub" / "a.txt").read_text() == "hello"
    assert len(list((root.subsystem_dir("jit") / ".quarantine").iterdir())) == 1


def test_require_hit_names_subsystem_and_factors(root, monkeypatch):
    get_or_build("jit", "cpu/rms", {"arch": "cpu", "src": "v1"}, _writer("x", []), root=root)
    monkeypatch.setenv("TIERLM_CACHE_REQUIRE_HIT", "1")
    assert get_or_build("jit", "cpu/rms", {"arch": "cpu", "src": "v1"}, _writer("x", []), root=root).hit
    with pytest.raises(CacheMissError) as err:
        get_or_build("jit", "cpu/rms", {"arch": "cpu", "src": "v2"}, _writer("x", []), root=root)
    msg = str(err.value)
    assert "'jit'" in msg and '"src": "v2"' in msg and "differs in src" in msg
    assert err.value.subsystem == "jit" and err.value.factors == {"arch": "cpu", "src": "v2"}
