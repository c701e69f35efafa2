"""`benchmarks/gpu_stall_probe.py`: the stalls and their spacing from known iteration times (the probe itself
needs a GPU and is skipped without one)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import gpu_stall_probe as probe  # noqa: E402


def _times() -> list[float]:
    """1 ms iterations, with 6 ms stalls ending at 1.005 s and 2.010 s and a 3 ms one ending at 2.512 s."""
    gaps = [1] * 999 + [6] + [1] * 999 + [6] + [1] * 499 + [3] + [1] * 488
    out = [0]
    for g in gaps:
        out.append(out[-1] + g)
    return [ms / 1000 for ms in out]


def test_stalls_in_time_order_and_their_spacing():
    found = probe.stalls(_times(), stall_ms=2.0)
    assert [round(at, 3) for at, _ in found] == [1.005, 2.010, 2.512]
    assert [round(g, 3) for _, g in found] == [6.0, 6.0, 3.0]
    lines = probe.report(_times(), stall_ms=2.0)
    assert lines[0] == "2988 intervals over 3.0 s: median 1.000 ms, longest 6.00 ms, 3 over 2 ms (15.0 ms in all)"
    assert lines[1:4] == ["     6.00 ms at   1.005 s", "     6.00 ms at   2.010 s", "     3.00 ms at   2.512 s"]
    assert lines[4] == "  between stalls: median 753.5 ms, min 502.0, max 1005.0"
    assert probe.report(_times(), stall_ms=10.0)[1:] == []
    assert probe.report([1.0], stall_ms=2.0) == ["no intervals"]


def test_bad_arguments_are_refused(capsys):
    with pytest.raises(SystemExit):
        probe.main(["--kernels", "0"])
    assert "--kernels" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("eager", [False, True])
def test_the_probe_runs_its_iterations(eager):
    step = probe.make_step(kernels=20, eager=eager)
    for _ in range(3):
        step()
    torch.cuda.synchronize()
