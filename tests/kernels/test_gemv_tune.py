"""The small-batch linear plan: which launch each (prologue, rows) gets, from given timings (no GPU)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

pytest.importorskip("triton")

from tierlm.kernels import gemv_tune  # noqa: E402


def test_plan_keeps_cublas_unless_a_candidate_beats_it_by_the_margin_and_skips_launches_that_fail(monkeypatch):
    fast, close, broken = gemv_tune.CANDIDATES[0], gemv_tune.CANDIDATES[1], gemv_tune.CANDIDATES[-1]

    def timing(prologue: str, rows: int, cfg) -> float:
        """Microseconds per call: the torch path 10, `fast` 6 (9.9 for plain at 4 rows), `close` 9.8."""
        if cfg is None:
            return 10.0
        if cfg == broken:
            raise RuntimeError("no such launch on this GPU")
        if cfg == fast:
            return 9.9 if (prologue, rows) == ("plain", 4) else 6.0
        return 9.8 if cfg == close else 20.0

    monkeypatch.setattr(gemv_tune, "graph_time_us", lambda fn, copies: fn(0))
    monkeypatch.setattr(gemv_tune, "_paths", lambda prologue, rows, k, gen, dtype, device: (
        lambda w, c: timing(prologue, rows, None), lambda w, c: timing(prologue, rows, c)))
    out = gemv_tune.tune_gemv(8, 16, ("plain", "rmsnorm"), torch.float32, torch.device("cpu"))
    plan, fast_dict = out["plan"], dataclasses.asdict(fast)
    assert plan["plain"]["1"] == plan["plain"]["2"] == plan["rmsnorm"]["4"] == fast_dict
    assert plan["plain"]["4"] is None, "9.9 us is not under cuBLAS's 10 by the margin: cuBLAS stays"
    assert out["timings_us"]["plain/4/" + close.label()] == 9.8
    assert not any(broken.label() in key for key in out["timings_us"]), "a launch that fails is skipped"
