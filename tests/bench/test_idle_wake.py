"""`benchmarks/idle_wake.py` without a GPU: the host probe alone, one row per pause."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import idle_wake  # noqa: E402


def test_host_probe_rows(capsys, monkeypatch):
    monkeypatch.setattr(idle_wake.torch.cuda, "is_available", lambda: False)
    idle_wake.main(["--gaps", "0,0.01", "--repeats", "3"])
    head, *rows = capsys.readouterr().out.splitlines()
    assert head.endswith("pause s | host work")
    assert [r.split("|")[0].strip() for r in rows] == ["0.00", "0.01"]
    for r in rows:
        median, spread = r.split("|")[1].split()
        low, high = map(float, spread.strip("()").split("-"))
        assert 0 < low <= float(median) <= high
