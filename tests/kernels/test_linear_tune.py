"""A decode linear's plan: which launch each (prologue, rows) gets, from given timings (no GPU)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

pytest.importorskip("triton")

from tierlm.kernels import gemv_tune, linear_tune  # noqa: E402


class Timed:
    """What the fake paths return: the microseconds a call takes, and an output that `float()` exposes to the
    tuner's check (the right one unless `wrong`)."""

    def __init__(self, us: float, wrong: bool = False) -> None:
        self.us, self.wrong = us, wrong

    def float(self) -> torch.Tensor:
        return torch.arange(4.0) + (1.0 if self.wrong else 0.0)


def test_plan_from_timings(monkeypatch):
    """cuBLAS stays unless a launch beats it by the margin; a fusion must also beat the unfused prologue
    followed by the plain plan's launch; a launch that fails to build, or whose result is not the torch
    path's, is skipped (however fast)."""
    fast, close, broken = gemv_tune.CANDIDATES[0], gemv_tune.CANDIDATES[1], gemv_tune.CANDIDATES[-1]
    wrong = gemv_tune.CANDIDATES[2]

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
        return 1.0 if cfg == wrong else 9.8 if cfg == close else 20.0

    def paths(prologue, rows, k, gen, dtype, device):
        def run(path):
            return lambda w, c: Timed(timing(prologue, rows, path, c), wrong=path == "kernel" and c == wrong)

        return run("torch"), run("kernel"), None if prologue == "plain" else run("unfused")

    skipped = gemv_tune.CANDIDATES[3]
    monkeypatch.setattr(linear_tune, "graph_time_us", lambda fn, copies: fn(0).us)
    monkeypatch.setattr(linear_tune, "prologue_paths", lambda *args: paths(*args[:6]))
    out = linear_tune.tune_linear("test", 8, 16, ("rmsnorm", "plain"), torch.float32, torch.device("cpu"),
                                  gemv_tune.BUCKETS, gemv_tune.CANDIDATES, gemv_tune.KERNELS,
                                  skip=lambda cfg, rows: cfg == skipped and rows == 2)
    plan, fast_dict = out["plan"], dataclasses.asdict(fast)
    assert plan["plain"]["1"] == plan["plain"]["2"] == fast_dict
    assert plan["plain"]["4"] is None, "9.9 us is not under cuBLAS's 10 by the margin: cuBLAS stays"
    assert plan["rmsnorm"]["1"] == fast_dict, "6 beats both unfused paths (10, and 7 with the plain launch)"
    assert plan["rmsnorm"]["2"] is None, "the norm then the plain launch (5) beats the fused launch (6)"
    assert plan["rmsnorm"]["4"] == fast_dict, "no plain launch at 4 rows: the fusion only has to beat cuBLAS"
    assert out["timings_us"]["rmsnorm/2/unfused+" + fast.label()] == 5.0
    assert out["timings_us"]["plain/4/" + close.label()] == 9.8
    assert not any(broken.label() in key for key in out["timings_us"]), "a launch that fails is skipped"
    assert not any(wrong.label() in key for key in out["timings_us"]), "a launch with wrong results is skipped"
    assert "plain/1/" + skipped.label() in out["timings_us"] and "plain/2/" + skipped.label() not in out["timings_us"]


def test_check_close_takes_rounding_and_refuses_the_rest():
    ref = torch.tensor([1.0, -2.0, 4.0])
    linear_tune.check_close(ref + 0.05, ref)  # 0.05 <= 2% of 4
    for bad in (ref + 0.1, ref * float("nan")):
        with pytest.raises(RuntimeError, match="differs from the torch path"):
            linear_tune.check_close(bad, ref)


def test_a_prologue_the_kernel_does_not_fuse_is_refused_before_any_timing():
    kernels = linear_tune.LinearKernels(plain=lambda x, w, c: x)
    for prologue in ("rmsnorm", "silu_mul"):
        with pytest.raises(ValueError, match=f"no '{prologue}' prologue"):
            linear_tune.prologue_paths(prologue, 8, 16, torch.Generator().manual_seed(0), torch.float32,
                                       torch.device("cpu"), kernels)
    torch_path, kernel, unfused = linear_tune.prologue_paths("plain", 8, 16, torch.Generator().manual_seed(0),
                                                             torch.float32, torch.device("cpu"), kernels)
    assert unfused is None and kernel(None, None).shape == (8, 16)


def test_after_norm_feeds_every_plain_path_from_a_norm_launched_just_before(monkeypatch):
    normed = []

    def norm(x, weight, eps, residual=None):
        out = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight
        normed.append(out)
        return out, None

    monkeypatch.setattr("tierlm.kernels.fused.rmsnorm", norm)
    kernels = linear_tune.LinearKernels(plain=lambda x, w, c: x @ w.T)
    w = torch.randn(4, 16)
    torch_path, kernel, unfused = linear_tune.prologue_paths("plain", 8, 16, torch.Generator().manual_seed(0),
                                                             torch.float32, torch.device("cpu"), kernels,
                                                             after_norm=True)
    ref, out = torch_path(w, None), kernel(w, None)
    assert unfused is None and len(normed) == 2, "each path runs the norm itself, every call"
    assert torch.equal(normed[0], normed[1]) and torch.allclose(ref, normed[0] @ w.T) and torch.equal(out, ref)
    plain_ref, _, _ = linear_tune.prologue_paths("plain", 8, 16, torch.Generator().manual_seed(0), torch.float32,
                                                 torch.device("cpu"), kernels)
    assert not torch.allclose(plain_ref(w, None), ref), "without after_norm the input is not normalised"


def test_wide_tiles_only_for_long_rows(monkeypatch):
    """The launches with a K tile over 1,024 are timed only where a row is long enough to fill it; the others
    always are (tiny test models keep every launch they had)."""
    wide = [c for c in gemv_tune.CANDIDATES if c.block_k > 1024]
    assert wide, "the candidates include wide tiles"
    assert not any(gemv_tune.too_wide(c, 2048) for c in gemv_tune.CANDIDATES)
    assert all(gemv_tune.too_wide(c, 1024) for c in wide) and all(gemv_tune.too_wide(c, 1500) is False for c in wide)
    assert not any(gemv_tune.too_wide(c, k) for c in gemv_tune.CANDIDATES if c.block_k <= 1024 for k in (16, 64, 1024))
    seen = {}  # what the shape's tuning is handed
    monkeypatch.setattr(gemv_tune, "tune_linear", lambda *args, skip, **kw: seen.setdefault("skip", skip))
    gemv_tune.tune_gemv(8, 1024, ("plain",), torch.float32, torch.device("cpu"))
    assert all(seen["skip"](c, 1) for c in wide) and not seen["skip"](gemv_tune.CANDIDATES[0], 1)


def test_every_timed_launch_is_built_first_on_the_pool(monkeypatch):
    """Before any timing, the pool is handed one launch per (prologue, rows, launch) the tuning will time (the
    skipped ones left out), each the kernel path on the first weight; the serial timing comes after."""
    calls, handed = [], []

    def kernel(w, cfg):
        calls.append(("kernel", cfg))
        return torch.zeros(4)

    def paths(prologue, rows, k, gen, dtype, device, kernels, after_norm):
        def torch_path(w, c):
            calls.append(("torch", None))
            return torch.zeros(4)
        return torch_path, (lambda w, c, rows=rows: kernel(w, (prologue, rows, c))), None

    def record(launches, device):
        assert calls == [], "built before anything is timed"
        handed.extend(launches)
        for launch in launches:
            launch()
        return 0

    cands = gemv_tune.CANDIDATES[:3]
    monkeypatch.setattr(linear_tune, "graph_time_us", lambda fn, copies: 1.0)
    monkeypatch.setattr(linear_tune, "prologue_paths", paths)
    monkeypatch.setattr(linear_tune, "prebuild", record)
    linear_tune.tune_linear("test", 8, 16, ("silu_mul", "plain"), torch.float32, torch.device("cpu"), (1, 2), cands,
                            gemv_tune.KERNELS, skip=lambda cfg, rows: cfg == cands[1] and rows == 2)
    built = [cfg for kind, cfg in calls[:len(handed)]]
    assert len(handed) == 2 * 2 * 3 - 2
    assert sorted(built, key=repr) == sorted([(p, r, c) for p in ("silu_mul", "plain") for r in (1, 2) for c in cands
                                              if not (c == cands[1] and r == 2)], key=repr)


def test_a_near_tie_goes_to_the_first_listed_launch_whatever_its_timing_noise(monkeypatch):
    """Two launches a tuning cannot tell apart get one plan in either order of their timed times; a launch 2%
    faster still wins."""
    first, second = gemv_tune.CANDIDATES[0], gemv_tune.CANDIDATES[1]

    def plan_for(us_first: float, us_second: float) -> dict:
        def paths(prologue, rows, k, gen, dtype, device):
            times = {first: us_first, second: us_second}
            return (lambda w, c: Timed(10.0)), (lambda w, c: Timed(times.get(c, 20.0))), None

        monkeypatch.setattr(linear_tune, "graph_time_us", lambda fn, copies: fn(0).us)
        monkeypatch.setattr(linear_tune, "prologue_paths", lambda *args: paths(*args[:6]))
        out = linear_tune.tune_linear("test", 8, 16, ("plain",), torch.float32, torch.device("cpu"), (1,),
                                      gemv_tune.CANDIDATES, gemv_tune.KERNELS)
        return out["plan"]["plain"]["1"]

    assert plan_for(5.0, 5.04) == plan_for(5.04, 5.0) == dataclasses.asdict(first)
    assert plan_for(5.1, 5.0) == dataclasses.asdict(second)
