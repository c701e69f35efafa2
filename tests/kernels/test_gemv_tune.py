"""The small-batch linear plan: which launch each (prologue, rows) gets, from given timings (no GPU)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

pytest.importorskip("triton")

from tierlm.kernels import gemv_tune  # noqa: E402


def test_plan_from_timings(monkeypatch):
    """cuBLAS stays unless a launch beats it by the margin; a fusion must also beat the unfused prologue
    followed by the plain plan's launch; a launch that fails to build is skipped."""
    fast, close, broken = gemv_tune.CANDIDATES[0], gemv_tune.CANDIDATES[1], gemv_tune.CANDIDATES[-1]

    def timing(prologue: str, rows: int, path: str, cfg) -> float:
        """Microseconds per call: cuBLAS paths 10; `fast` 6 (9.9 plain at 4 rows), `close` 9.8; the prologue
        then the plain launch 7 at 1 row and 5 at 2 rows."""
        if path == "torch":
            return 10.0
        if path == "unfused":
            assert prologue != "plain" and cfg == fast, "the unfused path runs the plain plan's launch"
            return {1: 7.0, 2: 5.0}[rows]
        if cfg == broken:
            raise RuntimeError("no such launch on this GPU")
        if cfg == fast:
            return 9.9 if (prologue, rows) == ("plain", 4) else 6.0
        return 9.8 if cfg == close else 20.0

    def paths(prologue, rows, k, gen, dtype, device):
        unfused = None if prologue == "plain" else (lambda w, c: timing(prologue, rows, "unfused", c))
        return (lambda w, c: timing(prologue, rows, "torch", c), lambda w, c: timing(prologue, rows, "kernel", c),
                unfused)

    monkeypatch.setattr(gemv_tune, "graph_time_us", lambda fn, copies: fn(0))
    monkeypatch.setattr(gemv_tune, "_paths", paths)
    out = gemv_tune.tune_gemv(8, 16, ("rmsnorm", "plain"), torch.float32, torch.device("cpu"))
    plan, fast_dict = out["plan"], dataclasses.asdict(fast)
    assert plan["plain"]["1"] == plan["plain"]["2"] == fast_dict
    assert plan["plain"]["4"] is None, "9.9 us is not under cuBLAS's 10 by the margin: cuBLAS stays"
    assert plan["rmsnorm"]["1"] == fast_dict, "6 beats both unfused paths (10, and 7 with the plain launch)"
    assert plan["rmsnorm"]["2"] is None, "the norm then the plain launch (5) beats the fused launch (6)"
    assert plan["rmsnorm"]["4"] == fast_dict, "no plain launch at 4 rows: the fusion only has to beat cuBLAS"
    assert out["timings_us"]["rmsnorm/2/unfused+" + fast.label()] == 5.0
    assert out["timings_us"]["plain/4/" + close.label()] == 9.8
    assert not any(broken.label() in key for key in out["timings_us"]), "a launch that fails is skipped"
