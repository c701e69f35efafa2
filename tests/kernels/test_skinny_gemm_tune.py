"""The skinny linear's plan: which launch each rows bucket gets, from given timings (no GPU)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

pytest.importorskip("triton")

from tierlm.kernels import skinny_gemm_tune as tune  # noqa: E402


def test_rows_round_up_to_a_bucket_outside_the_range_none():
    assert [tune.bucket_of(r) for r in (1, 4, 5, 8, 9, 16, 100, 256, 257)] == [0, 0, 8, 8, 16, 16, 128, 256, 0]


def test_plan_from_timings(monkeypatch):
    """cuBLAS (10 us) stays unless a launch beats it by the margin; the fastest launch wins; a launch that
    fails to build, or whose result is not cuBLAS's, is skipped (however fast); the plan carries counters
    sized for the narrowest split launch chosen."""
    fast, close, broken, split = tune.CANDIDATES[0], tune.CANDIDATES[1], tune.CANDIDATES[-1], tune.CANDIDATES[2]
    wrong = tune.CANDIDATES[3]
    assert split.split_k > 1 and fast.split_k == 1

    def kernel(x, w, bias, cfg, counters):
        if cfg == broken:
            raise RuntimeError("no such launch on this GPU")
        assert (counters is not None) == (cfg.split_k > 1)
        return Result(cfg, x @ w.T + (1.0 if cfg == wrong else 0.0))

    class Result:
        """What the fake kernel returns: its launch, and an output that `float()` exposes to the check."""

        def __init__(self, cfg, out):
            self.cfg, self.out = cfg, out

        def float(self):
            return self.out

    def timing(result, rows: int) -> float:
        if isinstance(result, torch.Tensor):
            return 10.0
        result = result.cfg
        if result == wrong:
            return 1.0
        if result == fast:
            return 9.9 if rows == 256 else 6.0
        if result == split:
            return 5.0 if rows == 16 else 30.0
        return 9.8 if result == close else 20.0

    monkeypatch.setattr(tune, "weight_copies", lambda n, k, dtype, device, gen: ([torch.randn(n, k)], 1))
    monkeypatch.setattr(tune, "skinny_gemm", kernel)
    rows_seen = []

    def graph_time_us(fn, copies):
        result = fn(0)
        rows = rows_seen[-1] if not isinstance(result, torch.Tensor) else result.shape[0]
        if isinstance(result, torch.Tensor):
            rows_seen.append(rows)
        return timing(result, rows)

    monkeypatch.setattr(tune, "graph_time_us", graph_time_us)
    out = tune.tune_skinny(8, 16, torch.float32, torch.device("cpu"))
    plan = out["plan"]
    assert plan["8"] == plan["128"] == dataclasses.asdict(fast)
    assert plan["16"] == dataclasses.asdict(split), "the fastest launch wins"
    assert plan["256"] is None, "9.8 us is not under cuBLAS's 10 by the margin: cuBLAS stays"
    assert out["timings_us"]["256/" + close.label()] == 9.8
    assert not any(broken.label() in key for key in out["timings_us"]), "a launch that fails is skipped"
    assert not any(wrong.label() in key for key in out["timings_us"]), "a launch with wrong results is skipped"

    monkeypatch.setattr("tierlm.cachedir.AutotuneStore.get_or_tune", lambda self, kernel, factors, fn: out)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "test")
    stored = tune.tuned_skinny_plan(100, 16, torch.float32, torch.device("cpu"))
    assert stored.config_for(12) == split and stored.config_for(70) == fast and stored.config_for(200) is None
    assert stored.config_for(3) is None
    assert stored.counters is not None and stored.counters.numel() == -(-100 // split.block_n)
