"""Decode autotuning goes through the cache root's autotune store and honours its reuse switch."""
from __future__ import annotations

import json

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

    def fake_tune(base, num_heads, num_kv_heads, head_dim, dtype, device, kv_dtype=None):
        tunings.append(kv_dtype)
        stages = 2 if kv_dtype == torch.float8_e4m3fn else 3
        return {"decode_block_n": 64, "decode_num_warps": 8, "decode_num_stages": stages, "us": 1.0}

    monkeypatch.setattr(triton_autotune, "tune_decode", fake_tune)
    return tmp_path / "root", tunings


def tuned():
    return triton_autotune.tuned_config(TritonAttentionConfig(), 16, 8, 128, torch.bfloat16, torch.device("cpu"))


def test_tunes_once_then_reuses(fake_gpu):
    root, tunings = fake_gpu
    cfg = tuned()
    assert (cfg.decode_block_n, cfg.decode_num_warps, cfg.decode_num_stages) == (64, 8, 3)
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


def test_fp8_pool_tuned_on_its_own(fake_gpu):
    """An fp8 KV cache gets its own tuning (its own factors and result); the model-dtype tuning keeps its key
    (the same file as without the argument)."""
    root, tunings = fake_gpu
    tuned()
    same = triton_autotune.tuned_config(TritonAttentionConfig(), 16, 8, 128, torch.bfloat16, torch.device("cpu"),
                                        torch.bfloat16)
    assert same == tuned() and tunings == [None]
    fp8_cfg = triton_autotune.tuned_config(TritonAttentionConfig(), 16, 8, 128, torch.bfloat16,
                                           torch.device("cpu"), torch.float8_e4m3fn)
    assert tunings == [None, torch.float8_e4m3fn] and fp8_cfg.decode_num_stages == 2
    factors = [json.loads(f.read_text())["factors"] for f in (root / "autotune" / "triton_decode").glob("*.json")]
    fp8 = next(f for f in factors if f.get("kv_dtype") == "float8_e4m3fn")
    assert len(factors) == 2 and fp8["dtype"] == "bfloat16" and fp8["widen"] == "fp16"
