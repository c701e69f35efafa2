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


def test_the_tuner_gives_each_split_launch_its_own_counters_and_skips_whole_batch_tiles(monkeypatch):
    calls = []

    def plain(x, w, b, cfg, counters):
        assert (counters is not None) == (cfg.split_k > 1), "a split launch gets counters, others none"
        calls.append((cfg, None if counters is None else counters.numel()))
        return torch.zeros(1)

    monkeypatch.setattr(tune, "skinny_gemm", plain)
    seen = {}

    def tune_linear(name, n, k, prologues, dtype, device, buckets, candidates, kernels, skip, after_norm):
        seen.update(name=name, buckets=buckets, candidates=candidates, prologues=prologues, after_norm=after_norm)
        assert kernels.rmsnorm is None and kernels.silu_mul is None, "no prologue is fused into this kernel"
        for cfg in candidates:
            kernels.plain(None, None, cfg)
        seen["skipped"] = [(c.block_m, rows) for c in candidates for rows in buckets if skip(c, rows)]
        return {"plan": {}, "timings_us": {}}

    monkeypatch.setattr(tune, "tune_linear", tune_linear)
    tune.tune_skinny(100, 64, torch.float32, torch.device("cpu"))
    assert seen["name"] == "skinny_gemm" and seen["buckets"] == tune.BUCKETS and seen["prologues"] == ("plain",)
    assert seen["after_norm"], "timed after a norm, as a decode step runs it"
    assert [c for c, _ in calls] == list(tune.CANDIDATES)
    for cfg, count in calls:
        if cfg.split_k > 1:
            assert count == tune.num_counters(100, cfg), "one counter per output tile"
    assert seen["skipped"] and all(bm >= rows for bm, rows in seen["skipped"])
    assert all(c.block_m < rows for c in tune.CANDIDATES for rows in tune.BUCKETS
               if c.block_m and (c.block_m, rows) not in seen["skipped"])


def test_a_stored_plan_gives_launches_per_bucket_and_counters_for_the_widest_split(monkeypatch):
    plain, split, tiled = tune.CANDIDATES[0], tune.CANDIDATES[2], tune.CANDIDATES[-1]
    assert split.split_k > 1 and tiled.split_k > 1 and tiled.block_m
    old_root = {k: v for k, v in dataclasses.asdict(plain).items() if k != "tma"}  # stored before `tma` existed
    stored = {"plan": {"plain": {"8": old_root, "16": dataclasses.asdict(split), "64":
                                 dataclasses.asdict(tiled), "256": None}}, "timings_us": {}}
    factors_seen = {}

    def get_or_tune(self, kernel, factors, fn):
        factors_seen.update(factors)
        return stored

    monkeypatch.setattr("tierlm.cachedir.AutotuneStore.get_or_tune", get_or_tune)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "test")
    plan = tune.tuned_skinny_plan(100, 64, torch.float32, torch.device("cpu"))
    assert plan.config_for(5) == plain and plan.config_for(12) == split and plan.config_for(50) == tiled
    assert plan.config_for(200) is None and plan.config_for(3) is None and plan.config_for(300) is None
    assert plan.counters.numel() == tune.num_counters(100, tiled) > tune.num_counters(100, split)
    assert factors_seen["checked"] == tune.TOLERANCE and factors_seen["reference"] == "cuBLAS"
    assert factors_seen["timed_after"] == "rmsnorm", "tunings timed alone are not reused"
    assert factors_seen["tie"] == tune.TIE, "plans picked without the tie rule are tuned again"
    # the candidates keep the key they had before the `tma` field, so those cache roots are not tuned again
    assert factors_seen["candidates"][0] == (64, 128, 1, 4, 4, 0)
    assert tune._fields(dataclasses.replace(plain, tma=True)) == (64, 128, 1, 4, 4, 0, True)
