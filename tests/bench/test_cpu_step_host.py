"""`benchmarks/cpu_step_host.py` times the per-step host phases on a decoding engine and prints a row per
running count and text setting."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_step_host_costs_are_printed_per_running_count():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cpu_step_host.py"), "--running", "3", "5",
                           "--repeats", "20"], capture_output=True, text=True, timeout=240,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line.split() for line in proc.stdout.splitlines() if line.split() and line.split()[0].isdigit()]
    assert [(r[0], r[1]) for r in rows] == [("3", "False"), ("3", "True"), ("5", "False"), ("5", "True")]
    assert all(float(x) > 0 for r in rows for x in r[2:])
