"""`benchmarks/offline_steps.py` on a tiny model (CPU): every pass of the recorded run is in the table, the
recorded run computes its whole workload (nothing from the warm-up in the prefix cache), and the floor
counts the bytes the passes read."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[2]


def _module():
    spec = importlib.util.spec_from_file_location("offline_steps", ROOT / "benchmarks" / "offline_steps.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_summarize_buckets_decode_steps_by_batch_and_counts_the_floor():
    mod = _module()
    host = {"schedule": 0.001, "launch": 0.002, "wait": 0.0, "outputs": 0.0005}
    passes = [(0.0, "prefill", 0, 300, 0, 0.010, host), (0.01, "decode", 1, 0, 100, 0.001, host),
              (0.011, "decode", 40, 0, 4000, 0.003, host), (0.014, "decode", 300, 0, 30000, 0.009, host),
              (0.023, "mixed", 8, 50, 800, 0.004, host), (0.027, "decode", 50, 0, 5000, 0.003, host)]
    rows = mod.summarize(passes, kv_bytes_per_token=10, weight_bytes=1000, read_bps=1e6)
    assert [r["pass"] for r in rows] == ["prefill", "mixed", "decode 1-1", "decode 33-64", "decode >256"]
    assert sum(r["passes"] for r in rows) == 6 and sum(r["prefill_tokens"] for r in rows) == 350
    by = {r["pass"]: r for r in rows}
    assert by["decode 33-64"]["floor_s"] == (4000 * 10 + 1000) / 1e6 + (5000 * 10 + 1000) / 1e6
    assert by["decode 33-64"]["host_s"] == {k: 2 * v for k, v in host.items()}  # phases summed per group
    assert by["decode >256"]["tokens"] == 300 and abs(by["decode >256"]["seconds"] - 0.009) < 1e-12


def test_step_weight_bytes_leaves_out_an_untied_embedding_table():
    mod = _module()

    class LM(nn.Module):
        def __init__(self, tied: bool):
            super().__init__()
            self.model = nn.Module()
            self.model.embed_tokens = nn.Embedding(100, 8)
            self.model.layer = nn.Linear(8, 8, bias=False)
            self.lm_head = nn.Linear(8, 100, bias=False)
            if tied:
                self.lm_head.weight = self.model.embed_tokens.weight

    assert mod.step_weight_bytes(LM(tied=False)) == (64 + 800) * 4  # layer + head, not the table
    assert mod.step_weight_bytes(LM(tied=True)) == (64 + 800) * 4  # the shared table is the head


def test_offline_steps_records_every_pass_of_the_workload(tiny_qwen3, tmp_path):
    out = tmp_path / "steps.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "offline_steps.py"), "--model", str(tiny_qwen3), "--device", "cpu",
         "--dtype", "float32", "--load-format", "auto", "--kv-cache-gb", "0.02", "--num-requests", "12",
         "--input-len", "20", "40", "--output-len", "3", "9", "--json", str(out)],
        capture_output=True, text=True, timeout=240, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())
    from tierlm.cli.bench.offline import Workload
    vocab = json.loads((Path(tiny_qwen3) / "config.json").read_text())["vocab_size"]
    work = Workload.make(12, (20, 40), (3, 9), vocab, 0)
    assert data["report"]["output_tokens"] == sum(work.output_lens)
    assert sum(r["passes"] for r in data["rows"]) == len(data["passes"])
    # every prompt token computed in the recorded run (the warm-up's prompts were others)
    assert sum(r["prefill_tokens"] for r in data["rows"]) == sum(len(p) for p in work.prompts)
    decode = [r for r in data["rows"] if r["pass"].startswith("decode")]
    assert decode and all(r["floor_s"] > 0 for r in decode)
    lines = proc.stdout.splitlines()
    assert "floor/meas" in proc.stdout and any(line.startswith("all") for line in lines)
    # every pass carries the host phases of the step that launched it; the launches took time
    assert all(set(p[6]) == {"schedule", "launch", "wait", "outputs"} for p in data["passes"])
    assert sum(p[6]["launch"] for p in data["passes"]) > 0
    slowest = lines.index(next(line for line in lines if line.startswith("slowest passes")))
    assert len([line for line in lines[slowest + 1:] if line.startswith("  ")]) == min(8, len(data["passes"]))
    # the host's way to its first launch, in order: the arrivals end, the first schedule runs, the launch starts
    h = data["report"]["host_before_first_launch"]
    assert 0 < h["adds_s"] <= h["adds_end_s"] <= h["schedule_start_s"] < h["schedule_end_s"] <= h["launch_start_s"]
    assert h["first_schedule_s"] == pytest.approx(h["schedule_end_s"] - h["schedule_start_s"])
    assert any(line.startswith("host before the first launch: ") and "12 arrivals" in line for line in lines)
