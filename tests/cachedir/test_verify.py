"""`verify`: a flipped byte or a damaged entry is found, the entry quarantined, and the next use rebuilds it."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tierlm.cachedir import collect_garbage, disk_usage, get_or_build, verify_root


def test_flipped_byte_is_quarantined_and_rebuilt(root):
    calls: list = []

    def build(staging: Path) -> None:
        calls.append(1)
        (staging / "kernel.so").write_bytes(bytes(range(256)) * 16)
    entry = get_or_build("jit", "cpu/k", {"v": 1}, build, root=root)
    entry.release()
    assert all(r.ok for r in verify_root(root))
    data = bytearray((entry.path / "kernel.so").read_bytes())
    data[1000] ^= 0x01
    (entry.path / "kernel.so").write_bytes(bytes(data))
    results = verify_root(root)
    bad = [r for r in results if not r.ok]
    assert len(bad) == 1 and bad[0].problems[0].path == "kernel.so"
    assert bad[0].problems[0].problem == "sha256 mismatch"
    assert bad[0].quarantined_to is not None and bad[0].quarantined_to.exists()
    assert not entry.path.exists()
    again = get_or_build("jit", "cpu/k", {"v": 1}, build, root=root)
    assert len(calls) == 2 and not again.hit
    assert (again.path / "kernel.so").read_bytes() == bytes(range(256)) * 16
    assert all(r.ok for r in verify_root(root))


def test_report_only_and_missing_file(root):
    entry = get_or_build("jit", "m", {"v": 1}, lambda s: (s / "f").write_text("abc"), root=root)
    (entry.path / "f").unlink()
    results = verify_root(root, fix=False)
    assert results[0].problems[0].problem == "missing" and results[0].quarantined_to is None
    assert entry.path.exists()


def _damage(entry_path: Path, how: str) -> None:
    manifest = entry_path / "manifest.json"
    if how == "bad json":
        manifest.write_text("{not json")
    elif how == "empty":
        manifest.write_text("")
    elif how == "deleted":
        manifest.unlink()
    elif how == "wrong types":
        data = json.loads(manifest.read_text())
        data["files"] = {name: "oops" for name in data["files"]}
        manifest.write_text(json.dumps(data))
    elif how == "file":
        shutil.rmtree(entry_path)
        entry_path.write_text("not an entry")


DAMAGE = ["bad json", "empty", "deleted", "wrong types", "file"]


@pytest.mark.parametrize("how", DAMAGE)
def test_damaged_entry_is_reported_quarantined_and_rebuilt(root, how):
    calls: list = []

    def build(staging: Path) -> None:
        calls.append(1)
        (staging / "kernel.so").write_bytes(b"k" * 100)
    entry = get_or_build("jit", "cpu/k", {"v": 1}, build, root=root)
    entry.release()
    _damage(entry.path, how)
    report = verify_root(root, fix=False)
    assert len(report) == 1 and not report[0].ok and report[0].path == entry.path
    assert os.path.lexists(entry.path)  # report only
    [result] = verify_root(root)
    assert result.quarantined_to is not None and not os.path.lexists(entry.path)
    again = get_or_build("jit", "cpu/k", {"v": 1}, build, root=root)
    assert len(calls) == 2 and (again.path / "kernel.so").read_bytes() == b"k" * 100
    assert all(r.ok for r in verify_root(root))


@pytest.mark.parametrize("how", DAMAGE)
def test_damaged_entry_is_rebuilt_on_load_without_verify(root, how):
    build = lambda s: (s / "kernel.so").write_bytes(b"k")  # noqa: E731
    entry = get_or_build("jit", "cpu/k", {"v": 1}, build, root=root)
    entry.release()
    _damage(entry.path, how)
    again = get_or_build("jit", "cpu/k", {"v": 1}, build, root=root)
    assert not again.hit and (again.path / "kernel.so").read_bytes() == b"k"
    assert list((root.subsystem_dir("jit") / ".quarantine").iterdir())


def test_gc_sees_damaged_entries_and_evicts_them_first(root):
    old = get_or_build("jit", "cpu/old", {"v": 1}, lambda s: (s / "f").write_bytes(b"o" * 5000), root=root)
    old.release()
    new = get_or_build("jit", "cpu/new", {"v": 1}, lambda s: (s / "f").write_bytes(b"n" * 5000), root=root)
    new.release()
    (new.path / "manifest.json").write_text("")
    report = collect_garbage(root, disk_usage(root) - 1)
    assert [p for p, _ in report.removed] == [new.path] and old.path.exists()


def test_library_trees_and_kernel_dirs_are_not_mistaken_for_damage(root):
    """tvm-ffi's own tree under jit/, and an autotune kernel directory, are not entries."""
    (root.subsystem_dir("jit") / "tvm-ffi" / "mod_" / ("a" * 32)).mkdir(parents=True)
    (root.subsystem_dir("autotune") / ("b" * 32)).mkdir(parents=True)
    assert verify_root(root) == []
