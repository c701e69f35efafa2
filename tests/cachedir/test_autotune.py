"""Autotune store (seed 001 semantics): reuse by default; TIERLM_AUTOTUNE_CACHE=0 tunes afresh into runs/
and never touches or reads the canonical file; promote adopts a run."""
from __future__ import annotations

import json
import logging

import pytest

from tierlm.cachedir import AutotuneStore

FACTORS = {"device_arch": "cpu", "m": 128, "n": 256, "dtype": "float32", "policy": "eager"}


def _tuner(calls: list, result: dict):
    def tune() -> dict:
        calls.append(1)
        return dict(result)
    return tune


def test_reuse_on_second_run_does_not_tune(root, caplog):
    calls: list = []
    store = AutotuneStore(root=root, device={"device_name": "cpu"})
    assert store.get_or_tune("matmul", FACTORS, _tuner(calls, {"block": 64})) == {"block": 64}
    with caplog.at_level(logging.INFO, logger="tierlm.cachedir.autotune"):
        again = AutotuneStore(root=root).get_or_tune("matmul", FACTORS, _tuner(calls, {"block": 32}))
    assert again == {"block": 64} and calls == [1]
    path = store.canonical_path("matmul", FACTORS)
    assert f"uses {path}" in caplog.text
    data = json.loads(path.read_text())
    meta = data["metadata"]
    assert data["factors"] == FACTORS and meta["device_name"] == "cpu"
    assert {"torch", "triton", "tierlm", "device_arch"} <= set(meta)


def test_reuse_off_writes_run_and_leaves_canonical_untouched(root, monkeypatch):
    calls: list = []
    AutotuneStore(root=root).get_or_tune("matmul", FACTORS, _tuner(calls, {"block": 64}))
    canonical = AutotuneStore(root=root).canonical_path("matmul", FACTORS)
    before = canonical.read_bytes()
    monkeypatch.setenv("TIERLM_AUTOTUNE_CACHE", "0")
    store = AutotuneStore(root=root)
    assert not store.reuse
    assert store.get_or_tune("matmul", FACTORS, _tuner(calls, {"block": 128})) == {"block": 128}
    assert store.get_or_tune("matmul", FACTORS, _tuner(calls, {"block": 256})) == {"block": 256}
    assert calls == [1, 1, 1]  # runs are never read back
    runs = store.runs()
    assert len(runs) == 2 and all(r.parent == store.directory / "runs" for r in runs)
    assert all(r.name.startswith("matmul.") and r.suffix == ".json" for r in runs)
    assert canonical.read_bytes() == before
    # promote a run: it becomes the canonical result
    monkeypatch.delenv("TIERLM_AUTOTUNE_CACHE")
    target = AutotuneStore(root=root).promote(runs[0].name)
    assert target == canonical and canonical.read_bytes() == runs[0].read_bytes()
    assert AutotuneStore(root=root).load("matmul", FACTORS) == {"block": 128}


def test_run_file_name_format(root):
    path = AutotuneStore(root=root, reuse=False).save("decode_attn", FACTORS, {"split": 4})
    import os
    import re
    assert re.fullmatch(rf"decode_attn\.\d{{8}}_\d{{6}}-{os.getpid()}(-\d+)?\.json", path.name)


def test_corrupt_canonical_file_is_ignored_not_fatal(root):
    store = AutotuneStore(root=root)
    path = store.canonical_path("matmul", FACTORS)
    path.parent.mkdir(parents=True)
    path.write_text("{truncated")
    calls: list = []
    assert store.get_or_tune("matmul", FACTORS, _tuner(calls, {"block": 8})) == {"block": 8}
    assert calls == [1]


def test_promote_rejects_garbage(root, tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text("{}")
    with pytest.raises(ValueError):
        AutotuneStore(root=root).promote(bad)
    with pytest.raises(FileNotFoundError):
        AutotuneStore(root=root).promote("nope")


def test_promote_keeps_a_different_canonical_result_as_a_run(root):
    store = AutotuneStore(root=root)
    canonical = store.save("matmul", FACTORS, {"block": 64})
    before = canonical.read_bytes()
    run = AutotuneStore(root=root, reuse=False).save("matmul", FACTORS, {"block": 128})
    target, backup = store.promote_with_backup(run)
    assert target == canonical and canonical.read_bytes() == run.read_bytes()
    assert backup is not None and backup.parent == run.parent and backup.read_bytes() == before
    assert store.promote_with_backup(run) == (canonical, None)  # identical: nothing to keep
    assert store.promote(backup) == canonical and store.load("matmul", FACTORS) == {"block": 64}
    assert store.results() == [canonical]
