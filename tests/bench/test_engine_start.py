"""`benchmarks/engine_start.py` on a tiny model (CPU): the start-up's seconds, last."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import engine_start  # noqa: E402


def test_engine_start_prints_its_seconds(tiny_qwen3, capsys):
    engine_start.main(["--model", str(tiny_qwen3), "--device", "cpu"])
    last = capsys.readouterr().out.splitlines()[-1].split()
    assert last[:2] == ["engine", "start"] and float(last[2]) > 0 and last[3] == "s"
