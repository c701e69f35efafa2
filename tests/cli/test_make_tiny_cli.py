"""`tierlm make-tiny-model`: it never overwrites a directory unasked, and an unusable DIR is one line."""
from __future__ import annotations

import subprocess
import sys


def tierlm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tierlm", *args], capture_output=True, text=True, timeout=300)


def test_refuses_a_non_empty_directory_without_force(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    r = tierlm("make-tiny-model", str(tmp_path))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "--force" in r.stderr and str(tmp_path) in r.stderr
    assert (tmp_path / "config.json").read_text() == "{}"


def test_force_replaces_the_model_including_stale_shards(tmp_path):
    stale = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json"]
    for name in stale:
        (tmp_path / name).write_text("old")
    r = tierlm("make-tiny-model", str(tmp_path), "--force")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "model.safetensors").is_file()
    assert not any((tmp_path / name).exists() for name in stale)


def test_unwritable_directory_is_one_line(tmp_path):
    (tmp_path / "a-file").write_text("")
    r = tierlm("make-tiny-model", str(tmp_path / "a-file" / "model"))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "cannot write" in r.stderr, r.stderr
