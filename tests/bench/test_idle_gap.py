"""`benchmarks/idle_gap.py` on a tiny model (CPU): one line per pause, its median within its spread."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import idle_gap  # noqa: E402


def test_one_line_per_pause(tiny_qwen3, capsys):
    idle_gap.main(["--model", str(tiny_qwen3), "--device", "cpu", "--gaps", "0,0.01", "--repeats", "2"])
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith(("device", "pause"))]
    assert lines[0].startswith("device cpu, torch threads ") and "keep warm off" in lines[0]
    assert [ln.split()[1] for ln in lines[1:]] == ["0.00", "0.01"]
    for ln in lines[1:]:
        median, spread = ln.split(":")[1].split()
        low, high = map(float, spread.strip("()").split("-"))
        assert 0 < low <= float(median) <= high


def test_trace_rows(tiny_qwen3, capsys):
    idle_gap.main(["--model", str(tiny_qwen3), "--device", "cpu", "--gaps", "0,0.01", "--repeats", "1",
                   "--trace", "2"])
    out = capsys.readouterr().out.splitlines()
    rows = out[out.index(next(ln for ln in out if ln.startswith("traced (2 per pause"))) + 1:]
    assert [r.split("|")[0].strip() for r in rows] == ["0.00", "0.01"]
    for r in rows:
        gap, wall, lead, span, tail, ops, clock = (c.strip() for c in r.split("|"))
        assert float(wall) > 0 and clock == "-"  # no device ops on a CPU, no SM clock to read
        assert (lead, span, tail, ops) == ("-", "-", "-", "0")


def test_phase_rows(tiny_qwen3, capsys):
    idle_gap.main(["--model", str(tiny_qwen3), "--device", "cpu", "--gaps", "0,0.01", "--repeats", "1",
                   "--phases", "2"])
    out = capsys.readouterr().out.splitlines()
    head = next(ln for ln in out if ln.startswith("phases (2 per pause"))
    assert head.split(": ", 1)[1].split(" | ")[4:] == ["schedule", "launch", "wait", "outputs", "outside steps"]
    rows = out[out.index(head) + 1:]
    assert [r.split("|")[0].strip() for r in rows] == ["0.00", "0.01"]
    for r in rows:
        wall, first, execute, schedule, launch, wait, outputs, outside = (float(c) for c in r.split("|")[1:])
        assert 0 < first < wall and 0 < execute <= launch < wall  # the worker's execute runs within launch
        assert min(schedule, wait, outputs, outside) >= 0
        # of two rows each median is a mean, so the parts still sum to the wall
        assert abs(schedule + launch + wait + outputs + outside - wall) < 0.01


def test_phase_request_leaves_the_worker_as_it_was(tiny_qwen3):
    from tierlm import LLM, SamplingParams
    llm = LLM(str(tiny_qwen3), device="cpu")
    try:
        params = SamplingParams(temperature=0, max_tokens=2, ignore_eos=True, detokenize=False)
        cols = idle_gap.phase_request(llm, params, 0.0)
        assert len(cols) == 8 and "execute" not in vars(llm.engine.worker)
    finally:
        llm.close()
