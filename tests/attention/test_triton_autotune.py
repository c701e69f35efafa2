"""Decode autotuning goes through the cache root's autotune store and honours its reuse switch."""
from __future__ import annotations

import json
import textwrap

import pytest
import torch

pytest.importorskip("triton")

from tierlm.attention import triton_autotune  # noqa: E402
from tierlm.attention.triton_backend import TritonAttentionConfig  # noqa: E402


@pytest.fixture
def fake_gpu(monkeypatch, tmp_path):
    monkeypatch.setenv("TIERLM_CACHE_DIR", str(tmp_path / "root"))
    monkeypatch.delenv("TIERLM_AUTOTUNE_CACHE", raising=False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
    tunings = []

    def fake_tune(base, num_heads, num_kv_heads, head_dim, dtype, device):
        tunings.append(1)
        return {"decode_block_n": 64, "decode_num_warps": 8, "decode_num_stages": 3, "decode_fused_merge": True,
                "us": 1.0}

    monkeypatch.setattr(triton_autotune, "tune_decode", fake_tune)
    return tmp_path / "root", tunings


def tuned():
    return triton_autotune.tuned_config(TritonAttentionConfig(), 16, 8, 128, torch.bfloat16, torch.device("cpu"))


def test_tunes_once_then_reuses(fake_gpu):
    root, tunings = fake_gpu
    cfg = tuned()
    assert (cfg.decode_block_n, cfg.decode_num_warps, cfg.decode_num_stages) == (64, 8, 3)
    assert cfg.decode_fused_merge is True
    assert tuned() == cfg and len(tunings) == 1
    files = list((root / "autotune" / "triton_decode").glob("*.json"))
    assert len(files) == 1
    assert json.loads(files[0].read_text())["factors"]["device"] == "Fake GPU"


def test_reuse_off_writes_a_run_and_keeps_canonical(fake_gpu, monkeypatch):
    root, tunings = fake_gpu
    tuned()
    canonical = next((root / "autotune" / "triton_decode").glob("*.json"))
    before = canonical.read_bytes()
    monkeypatch.setenv("TIERLM_AUTOTUNE_CACHE", "0")
    tuned()
    assert len(tunings) == 2 and canonical.read_bytes() == before
    assert list((root / "autotune" / "runs").glob("triton_decode.*.json"))


def test_the_fused_merge_is_chosen_only_when_right_and_faster_by_the_margin():
    choose = triton_autotune.choose_merge
    assert choose(10.0, 9.0, 0.0, 0.01)
    assert not choose(10.0, 9.9, 0.0, 0.01), "within the margin: the two-stage launch stays"
    assert not choose(10.0, 5.0, 0.5, 0.01), "a result that is not the two-stage launch's is never chosen"
    assert not choose(10.0, 5.0, float("nan"), 0.01)


def test_the_merge_timing_runs_both_ways_and_chooses_by_result_and_time():
    """`_time_merge` end to end on the interpreter (CPU) or the GPU, with the graph timing replaced by given
    numbers: each way runs and is checked; a faster fused merge is chosen, a slower one is not."""
    from tests.kernels.interp import run_script

    run_script(textwrap.dedent("""
        import dataclasses, torch, triton.testing
        from tierlm.attention import triton_autotune as ta
        from tierlm.attention.triton_backend import TritonAttentionConfig
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        cfg = TritonAttentionConfig.for_device(dev)
        data = ta._random_batch(3, 40, 4, 2, 16, torch.float32, dev, spread=True)
        assert data[-1].min() >= 1 and data[-1].max() <= 40
        for merged_us, chosen in ((5.0, True), (9.9, False)):
            times = iter([10.0, merged_us])
            def fake_bench(fn, return_mode="median"):
                fn()
                return next(times) / 1e3
            triton.testing.do_bench_cudagraph = fake_bench
            got = ta._time_merge(cfg, data, num_sms=4)
            assert got["decode_fused_merge"] is chosen, got
            assert got["merge_us"] == [10.0, merged_us] and got["merge_max_diff"] < 1e-5, got
        print("ok")
    """))
