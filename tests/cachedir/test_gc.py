"""GC: LRU eviction of whole entries under a byte budget; entries held by a live process survive."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tierlm.cachedir import collect_garbage, disk_usage, get_or_build, iter_entries, resolve_root
from tierlm.cachedir.inventory import STAMP_NAME

from .conftest import HERE, child_env


def _make(root, name: str, size: int, age_s: float):
    def build(staging: Path) -> None:
        (staging / "blob").write_bytes(os.urandom(size))
    entry = get_or_build("jit", name, {"n": name}, build, root=root)
    entry.release()
    stamp = time.time() - age_s
    os.utime(entry.path / STAMP_NAME, (stamp, stamp))
    return entry.path


def test_evicts_least_recently_used_until_under_budget(root):
    old = _make(root, "old", 64 * 1024, 3000)
    mid = _make(root, "mid", 64 * 1024, 2000)
    new = _make(root, "new", 64 * 1024, 10)
    usage = disk_usage(root)
    budget = usage - 1  # one entry must go: the oldest
    report = collect_garbage(root, budget)
    assert [p for p, _ in report.removed] == [old]
    assert not old.exists() and mid.exists() and new.exists()
    assert report.after <= budget == report.budget
    report = collect_garbage(root, 0)
    assert not mid.exists() and not new.exists() and report.after == disk_usage(root)
    assert not list(iter_entries(root))


def test_never_deletes_an_entry_held_by_a_live_process(tmp_path):
    env = child_env(tmp_path)
    holder = subprocess.Popen([sys.executable, str(HERE / "_build_worker.py"), "hold", str(tmp_path / "log")],
                              env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        held = Path(json.loads(holder.stdout.readline())["path"])
        assert holder.stdout.readline().strip() == "ready"
        root = resolve_root({"TIERLM_CACHE_DIR": env["TIERLM_CACHE_DIR"]})
        os.utime(held / STAMP_NAME, (1, 1))  # the oldest: first in line for eviction
        other = _make(root, "other", 32 * 1024, 100)
        report = collect_garbage(root, 0)
        assert held.exists() and held in report.kept_in_use
        assert not other.exists()
        assert (held / "meta.txt").read_text() == "v1"
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    report = collect_garbage(root, 0)  # the holder is gone: its lock died with it
    assert not held.exists() and report.kept_in_use == []


def test_dead_staging_dirs_are_swept(root):
    stale = root.subsystem_dir("jit") / "m" / ".staging-deadbeef"
    stale.mkdir(parents=True)
    (stale / "x").write_text("partial")
    os.utime(stale, (1, 1))
    collect_garbage(root, 1 << 40)
    assert not stale.exists()


def test_automatic_gc_after_publish_when_budget_set(root, monkeypatch):
    _make(root, "a", 256 * 1024, 1000)
    monkeypatch.setenv("TIERLM_CACHE_MAX_GB", str(300 * 1024 / (1 << 30)))
    e = get_or_build("jit", "b", {"n": "b"}, lambda s: (s / "blob").write_bytes(os.urandom(128 * 1024)), root=root)
    names = {i.name for i in iter_entries(root)}
    assert names == {"b"} and e.path.exists()


@pytest.mark.parametrize("value", ["abc", "inf", "-2"])
def test_malformed_budget_variable_warns_naming_it_and_publishing_still_works(root, monkeypatch, caplog, value):
    monkeypatch.setenv("TIERLM_CACHE_MAX_GB", value)
    e = get_or_build("jit", "b", {"n": "b"}, lambda s: (s / "blob").write_bytes(b"b"), root=root)
    assert e.path.exists() and f"TIERLM_CACHE_MAX_GB={value!r} is not a size in GiB" in caplog.text


def test_report_breaks_unsplit_trees_down_by_subsystem(root):
    (root.path / "kv" / "ab").mkdir(parents=True)
    (root.path / "kv" / "ab" / "p.kvp").write_bytes(b"p" * 10000)
    _make(root, "a", 1000, 10)
    report = collect_garbage(root, 0, dry_run=True)
    assert set(report.unmanaged_by) == {"kv"} and report.unmanaged == report.unmanaged_by["kv"] >= 10000


def test_failed_builds_kept_for_debugging_are_evicted_first(root):
    kept = _make(root, "a", 1000, 10)
    failed = root.subsystem_dir("jit") / ".failed" / "k-20250101_000000-abcd1234"
    failed.mkdir(parents=True)
    (failed / "build.log").write_bytes(b"x" * 5000)
    report = collect_garbage(root, disk_usage(root) - 1)
    assert [p for p, _ in report.removed] == [failed] and kept.exists()
