"""`--kv-cache-dtype fp8`: the pool, the host tier and the store hold e4m3 bytes (a quarter of float32's), and
greedy outputs are the same whichever tier served the KV, per-head K/V and latents alike, one rank or two;
fp8 pages never answer a lookup of an engine whose KV cache has another dtype (the layout's dtype is part of
every page key); a bad value fails naming the flag."""
from __future__ import annotations

import argparse

import pytest
import torch

from tests.conftest import CPU_OPTS
from tests.kvcache.test_tier_paths import GREEDY, PROMPTS, TIER_OPTS, hits, serve
from tierlm import LLM
from tierlm.cli.args import add_engine_args

FP8 = dict(kv_cache_dtype="fp8")


def make(model_dir, **opts) -> LLM:
    return LLM(str(model_dir), **{**CPU_OPTS, **opts})


@pytest.fixture(scope="module")
def fp8_reference(tiny_qwen3):
    llm = make(tiny_qwen3, **FP8, enable_prefix_cache=False)
    pool = llm.engine.worker.runner.pool
    assert all(t.dtype == torch.float8_e4m3fn for bufs in pool.layers for t in bufs.values())
    full = make(tiny_qwen3, enable_prefix_cache=False).engine.worker.runner.pool
    assert full.bytes_per_page == 4 * pool.bytes_per_page  # float32 model: a quarter of the bytes per page
    return serve(llm)


def test_fp8_l1_and_l2_hits(tiny_qwen3, fp8_reference):
    llm = make(tiny_qwen3, **FP8, **TIER_OPTS, hicache_write_policy="write_through", hicache_write_threshold=1)
    assert serve(llm) == fp8_reference
    before = hits(llm)
    assert serve(llm) == fp8_reference
    assert hits(llm)["L1"] > before["L1"]
    kv = llm.engine.kv
    assert kv.drop_device_cache() > 0
    before = hits(llm)
    assert serve(llm) == fp8_reference
    assert hits(llm)["L2"] > before["L2"]
    llm.close()


def test_fp8_l3_after_restart_and_not_shared_with_other_dtypes(tiny_qwen3, fp8_reference, tmp_path):
    store = f"file://{tmp_path / 'kv'}"
    first = make(tiny_qwen3, **FP8, **TIER_OPTS, kv_store=store)
    assert serve(first) == fp8_reference
    first.close()
    second = make(tiny_qwen3, **FP8, **TIER_OPTS, kv_store=store)
    assert serve(second) == fp8_reference
    assert hits(second)["L3"] > hits(second)["L1"]
    second.close()
    other = make(tiny_qwen3, **TIER_OPTS, kv_store=store)  # float32 KV on the same store: no fp8 page fits
    assert serve(other) == serve(make(tiny_qwen3, enable_prefix_cache=False))
    assert hits(other)["L3"] == 0
    other.close()


def test_fp8_tp2_matches_one_rank_from_l1_and_l2(tiny_qwen3, fp8_reference):
    """Two gloo ranks, each with its half of the KV heads in fp8: the one-rank tokens, cold and from every tier."""
    llm = make(tiny_qwen3, **FP8, **TIER_OPTS, tp_size=2)
    try:
        assert serve(llm) == fp8_reference
        llm.engine.kv.drop_device_cache()
        before = hits(llm)
        assert serve(llm) == fp8_reference
        assert hits(llm)["L2"] > before["L2"]
    finally:
        llm.close()


def test_fp8_latent_cache_from_every_tier(tiny_models, tmp_path):
    """DeepSeek-V2's latents in fp8: a quarter of float32's bytes, and the no-cache tokens from L1, L2 and an
    L3 file store after a restart."""
    model = tiny_models["deepseek_v2"]
    reference = serve(make(model, **FP8, enable_prefix_cache=False))
    store = f"file://{tmp_path / 'kv'}"
    llm = make(model, **FP8, **TIER_OPTS, kv_store=store, hicache_write_threshold=1)
    assert llm.engine.worker.pool.layout.describe()[0] == [["latent", [40], "float8_e4m3fn"]]
    assert serve(llm) == reference
    assert serve(llm) == reference and hits(llm)["L1"] > 0
    llm.engine.kv.drop_device_cache()
    before = hits(llm)
    assert serve(llm) == reference and hits(llm)["L2"] > before["L2"]
    llm.close()
    second = make(model, **FP8, **TIER_OPTS, kv_store=store)
    assert serve(second) == reference and hits(second)["L3"] > 0
    second.close()


def test_flag_choices():
    ap = argparse.ArgumentParser()
    add_engine_args(ap)
    args = ap.parse_args(["--model", "m", "--kv-cache-dtype", "fp8_e4m3"])
    assert args.kv_cache_dtype == "fp8_e4m3"
    with pytest.raises(SystemExit):
        ap.parse_args(["--model", "m", "--kv-cache-dtype", "int4"])
    assert GREEDY.max_tokens and PROMPTS


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.bfloat16, torch.float32])
def test_put_and_take_rows(dtype):
    """Indexed writes and reads of a pool buffer of any dtype; fp8 saturates at +-448 (not NaN) and keeps NaN."""
    from tierlm.kvcache.pool import put_rows, take_rows

    buf = torch.zeros(8, 2, 4, dtype=dtype)
    values = torch.randn(3, 2, 4) * 100
    values[0, 0, :2] = torch.tensor([1e4, -1e4])
    values[1, 1, 3] = float("nan")
    slots = torch.tensor([5, 1, 6])
    put_rows(buf, slots, values)
    want = values.clamp(-448, 448) if dtype == torch.float8_e4m3fn else values
    got = take_rows(buf, slots)
    assert got.dtype == dtype
    torch.testing.assert_close(got.float(), want.to(dtype).float(), equal_nan=True, rtol=0, atol=0)
    assert torch.equal(take_rows(buf, torch.tensor([0, 2, 3, 4, 7])).float(), torch.zeros(5, 2, 4))
    if dtype == torch.float8_e4m3fn:
        assert got[0, 0, :2].tolist() == [448.0, -448.0]
