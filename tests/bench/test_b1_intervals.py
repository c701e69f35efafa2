"""`benchmarks/b1_intervals.py` on a tiny model (CPU): one row per request, its TPOT the mean of its intervals."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import b1_intervals  # noqa: E402


def test_row_keeps_the_stall_out_of_the_medians():
    arrivals = [0.0, 0.001, 0.002, 0.003, 0.010, 0.011]  # gaps 1, 1, 1, 7, 1 ms
    row = b1_intervals.interval_row(0, arrivals, 5.5, "1/0/0", "0.1 / 0.2 / 0.3 / 0.4", window=3)
    cells = row.split()
    assert float(cells[1]) == pytest.approx(2.2)  # the TPOT: 11 ms over 5 gaps
    assert float(cells[2]) == pytest.approx(5.5 / 6, abs=1e-3)  # device ms per token
    assert row.endswith("1.000 4.000   3 longest: 1.00, 1.00, 7.00")  # medians of (1, 1, 1) and (7, 1), the tail


def test_table_on_a_tiny_model(tiny_qwen3, capsys):
    b1_intervals.main(["--model", str(tiny_qwen3), "--device", "cpu", "--dtype", "float32", "--kv-cache-gb", "0.01",
                       "--page-size", "4", "--requests", "2", "--input-len", "5", "--output-len", "6",
                       "--window", "2", "--load-format", "auto"])
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    assert lines[0].split()[:3] == ["req", "TPOT", "ms"]
    rows = lines[1:]
    assert [r.split()[0] for r in rows] == ["0", "1"]
    for r in rows:
        steady, tail = r.split("3 longest:")
        cells = steady.split()  # req, TPOT, device, gc, then the four phases joined by " / ", then the medians
        assert float(cells[1]) > 0 and len(cells[11:]) == 3  # 5 intervals in windows of 2
        assert len(tail.split(",")) == 3


def test_bad_lengths_are_refused(capsys):
    with pytest.raises(SystemExit):
        b1_intervals.main(["--model", "x", "--output-len", "1"])
    assert "--output-len" in capsys.readouterr().err
