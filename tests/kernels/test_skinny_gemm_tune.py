"""The skinny linear's plan: what the tuner is given and how a stored plan is read back (no GPU; the shared
tuning loop is tested in test_linear_tune.py)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

pytest.importorskip("triton")

from tierlm.kernels import skinny_gemm_tune as tune  # noqa: E402


def test_rows_round_up_to_a_bucket_outside_the_range_none():
    assert [tune.bucket_of(r) for r in (1, 4, 5, 8, 9, 16, 100, 256, 257)] == [0, 0, 8, 8, 16, 16, 128, 256, 0]


def test_the_tuner_times_each_form_with_its_own_counters_and_skips_whole_batch_tiles(monkeypatch):
    calls = []

    def fake(form):
        def run(*args):
            cfg, counters = args[-2], args[-1]
            assert (counters is not None) == (cfg.split_k > 1), "a split launch gets counters, others none"
            calls.append((form, cfg, None if counters is None else counters.numel()))
            return (torch.zeros(1), None) if form == "rmsnorm" else torch.zeros(1)
        return run

    monkeypatch.setattr(tune, "skinny_gemm", lambda x, w, b, c, counters: fake("plain")(c, counters))
    monkeypatch.setattr(tune, "rmsnorm_skinny_gemm",
                        lambda x, r, nw, eps, w, b, c, counters: fake("rmsnorm")(c, counters))
    monkeypatch.setattr(tune, "silu_mul_skinny_gemm", lambda gu, w, c, counters: fake("silu_mul")(c, counters))
    seen = {}

    def tune_linear(name, n, k, prologues, dtype, device, buckets, candidates, kernels, skip):
        seen.update(name=name, buckets=buckets, candidates=candidates, prologues=prologues)
        split = next(c for c in candidates if c.split_k > 1)
        kernels.plain(None, None, split)
        kernels.rmsnorm(None, None, None, None, split)
        kernels.silu_mul(None, None, candidates[0])
        seen["skipped"] = [(c.block_m, rows) for c in candidates for rows in buckets if skip(c, rows)]
        return {"plan": {}, "timings_us": {}}

    monkeypatch.setattr(tune, "tune_linear", tune_linear)
    tune.tune_skinny(100, 64, ("plain", "rmsnorm"), torch.float32, torch.device("cpu"))
    assert seen["name"] == "skinny_gemm" and seen["buckets"] == tune.BUCKETS and seen["prologues"] == ("plain",
                                                                                                       "rmsnorm")
    assert [c[0] for c in calls] == ["plain", "rmsnorm", "silu_mul"]
    assert calls[0][2] == calls[1][2] == -(-100 // calls[0][1].block_n), "one counter per output tile"
    assert seen["skipped"] and all(bm >= rows for bm, rows in seen["skipped"])
    assert all(c.block_m < rows for c in tune.CANDIDATES for rows in tune.BUCKETS
               if c.block_m and (c.block_m, rows) not in seen["skipped"])


def test_a_stored_plan_gives_launches_per_prologue_and_counters_for_the_widest_split(monkeypatch):
    plain, split, tiled = tune.CANDIDATES[0], tune.CANDIDATES[2], tune.CANDIDATES[-1]
    assert split.split_k > 1 and tiled.split_k > 1 and tiled.block_m
    stored = {"plan": {"plain": {"8": dataclasses.asdict(plain), "16": dataclasses.asdict(split), "256": None},
                       "rmsnorm": {"8": None, "64": dataclasses.asdict(tiled)}}, "timings_us": {}}
    factors_seen = {}

    def get_or_tune(self, kernel, factors, fn):
        factors_seen.update(factors)
        return stored

    monkeypatch.setattr("tierlm.cachedir.AutotuneStore.get_or_tune", get_or_tune)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "test")
    plan = tune.tuned_skinny_plan(100, 64, ("plain", "rmsnorm"), torch.float32, torch.device("cpu"))
    assert plan.config_for(5) == plain and plan.config_for(12) == split and plan.config_for(200) is None
    assert plan.config_for(3) is None and plan.config_for(300) is None
    assert plan.config_for(8, "rmsnorm") is None and plan.config_for(50, "rmsnorm") == tiled
    assert plan.config_for(50, "silu_mul") is None, "a prologue the plan lacks: the unfused path"
    assert plan.counters.numel() == tune.num_counters(100, tiled) > tune.num_counters(100, split)
    assert factors_seen["prologues"] == ["plain", "rmsnorm"] and factors_seen["checked"] == tune.TOLERANCE
