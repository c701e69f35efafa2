"""`benchmarks/replay_arrivals.py` on a tiny model (CPU): every variant runs every request on fresh prompts, and
the mixed-step sizing it asks for is the one the scheduler used."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_replay_runs_each_variant_on_its_own_sizing(tiny_qwen3, tmp_path):
    out = tmp_path / "replay.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "replay_arrivals.py"), "--model", str(tiny_qwen3), "--device",
         "cpu", "--dtype", "float32", "--load-format", "auto", "--kv-cache-gb", "0.02", "--rate", "80",
         "--duration", "0.4", "--input-len", "48", "--output-len", "6",
         "--variants", "off=0/0/0;on=96/2/0", "--json", str(out), "--trace"],
        capture_output=True, text=True, timeout=240,
        # one intra-op thread: the tiny model's steps gain nothing from more, and they share the cores
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    reports = json.loads(out.read_text())
    assert set(reports) == {"off", "on"}
    for r in reports.values():
        assert r["completed"] == 32 and r["failed"] == 0 and r["total_output_tokens"] == 32 * 6
        assert r["step_host"]["steps"] >= sum(r["steps"].values())  # a step may only collect the last tokens
    assert "mixed" not in reports["off"]["steps"] and reports["off"]["mixed_prefill_mean"] == 0
    assert reports["on"]["steps"].get("mixed", 0) > 0 and 0 < reports["on"]["mixed_prefill_mean"] <= 96
    # prompts of their own: the second variant found nothing of the first in the prefix cache
    assert reports["on"]["prefill_tokens"] == reports["off"]["prefill_tokens"] == 32 * 48
    assert "on/off: TPOT p50" in proc.stdout
    for r in reports.values():  # the trace: every pass, every request; the arrival groups cover every request
        passes, requests = r["trace"]["passes"], r["trace"]["requests"]
        assert len(passes) == sum(r["steps"].values()) and len(requests) == 32
        assert sum(p[3] for p in passes) == 32 * 48 and all(ttft > 0 for _, ttft in requests)
        assert {p[1] for p in passes} == set(r["steps"])
        assert min(int(n) for n in r["ttft_ms_by_arrivals"]) >= 1
