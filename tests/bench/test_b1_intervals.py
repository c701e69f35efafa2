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
                       "--window", "2", "--load-format", "auto", "--stall-ms", "0"])
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    assert lines[0].split()[:3] == ["req", "TPOT", "ms"]
    assert lines[-1].startswith("threads (") and "MainThread" in lines[-1] and "switch interval" in lines[-1]
    rows = [ln for ln in lines[1:-1] if not ln.startswith("    ")]
    stalls = [ln for ln in lines[1:] if ln.startswith("    ")]
    assert len(stalls) == 2 * 5  # every interval is over 0 ms: each request's five, longest first
    assert all(" ms before step " in ln and "device spans" in ln for ln in stalls)
    assert [r.split()[0] for r in rows] == ["0", "1"]
    for r in rows:
        steady, tail = r.split("3 longest:")
        cells = steady.split()  # req, TPOT, device, gc, then the four phases joined by " / ", then the medians
        assert float(cells[1]) > 0 and len(cells[11:]) == 3  # 5 intervals in windows of 2
        assert len(tail.split(",")) == 3


def _step(at: float, tokens: int, launch_s: float, span_s: float) -> b1_intervals.StepRecord:
    host = {"schedule": 0.0001, "launch": launch_s, "wait": 0.0002, "outputs": 0.0001}
    return b1_intervals.StepRecord(at, tokens, host, [span_s])


def test_stall_lines_say_what_the_steps_between_two_tokens_spent():
    steps = [_step(0.000, 0, 0.0003, 0.0009),  # the prefill's launch: no token yet
             _step(0.001, 1, 0.0003, 0.0009),
             _step(0.002, 1, 0.0003, 0.0009),
             _step(0.009, 1, 0.0065, 0.0070),  # a 7 ms interval, the host late in its launch
             _step(0.0125, 0, 0.0010, 0.0009),  # a call that returned nothing
             _step(0.0130, 1, 0.0003, 0.0009),  # ... so this interval (4 ms) spans two calls
             _step(0.0140, 1, 0.0003, 0.0009)]
    lines = b1_intervals.stall_lines(steps, stall_ms=2.0)
    assert len(lines) == 2
    assert lines[0].startswith("    7.00 ms before step 3: host schedule 0.10 / launch 6.50 / wait 0.20 / outputs 0.10")
    assert lines[0].endswith("device spans 0.90, 7.00 ms")
    assert lines[1].startswith("    4.00 ms before step 5: host schedule 0.20 / launch 1.30 / wait 0.40 / outputs 0.20")
    assert lines[1].endswith("device spans 7.00, 0.90, 0.90 ms")
    assert b1_intervals.stall_lines(steps, stall_ms=7.5) == []
    assert len(b1_intervals.stall_lines(steps, stall_ms=0.5, most=3)) == 3
    assert b1_intervals.arrivals_of(steps) == [0.001, 0.002, 0.009, 0.0130, 0.0140]


def test_bad_lengths_are_refused(capsys):
    with pytest.raises(SystemExit):
        b1_intervals.main(["--model", "x", "--output-len", "1"])
    assert "--output-len" in capsys.readouterr().err
