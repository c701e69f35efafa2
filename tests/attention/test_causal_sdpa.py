"""`causal_sdpa`: the bucketed lengths fresh prompts run at, and both causal calls against float64 attention (on a
GPU too, where the fresh one takes cuDNN's attention)."""
from __future__ import annotations

import math

import pytest
import torch

from tierlm.attention.causal_sdpa import bucket_lengths, bucketed_length, fresh_causal, offset_causal
from tierlm.attention.mla_up_proj import LatentForms, LatentUpProj

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize(("n", "padded"), [
    (1, 256), (256, 256), (257, 512), (2048, 2048), (2049, 2304), (4096, 4096), (4097, 4608), (8191, 8192),
    (8193, 9216), (20000, 20480),
])
def test_bucketed_length(n: int, padded: int) -> None:
    assert bucketed_length(n) == padded


def test_buckets_cover_every_length_and_pad_little() -> None:
    lengths = bucket_lengths(1, 20000)
    assert lengths == sorted(set(lengths))
    for n in range(1, 20001):
        padded = bucketed_length(n)
        assert padded in lengths and bucketed_length(padded) == padded
        assert n <= padded < n + max(256, n / 8)  # a step is a sixteenth of at most 2n
    assert len(bucket_lengths(2048, 8192)) == 17  # 2K, then 8 steps of 256 and 8 of 512
    assert bucket_lengths(5, 4) == []


def _reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """float64 causal attention of q `[n, H, D]` at the last n of k's positions."""
    n, seq = q.shape[0], k.shape[0]
    scores = torch.einsum("nhd,shd->hns", q.double(), k.double()) * scale
    mask = torch.arange(seq)[None, :] > torch.arange(seq - n, seq)[:, None]
    probs = scores.masked_fill(mask.to(scores.device), float("-inf")).softmax(-1)
    return torch.einsum("hns,shv->nhv", probs, v.double())


def _tolerance(dtype: torch.dtype) -> dict[str, float]:
    return {torch.float32: dict(atol=1e-4, rtol=1e-4)}.get(dtype, dict(atol=2e-2, rtol=2e-2))


def _dtypes(device: str) -> list[torch.dtype]:
    return [torch.float32] if device == "cpu" else [torch.bfloat16, torch.float16, torch.float32]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n", [1, 7, 256, 300])
def test_fresh_causal_matches_float64(device: str, n: int) -> None:
    gen = torch.Generator().manual_seed(n)
    heads, dk, dv = 3, 24, 16
    for dtype in _dtypes(device):
        q, k = (torch.randn(n, heads, dk, generator=gen).to(device, dtype) for _ in range(2))
        v = torch.randn(n, heads, dv, generator=gen).to(device, dtype)
        got = fresh_causal(q, k, v, dk ** -0.5)
        assert got.shape == (n, heads, dv)
        torch.testing.assert_close(got.double(), _reference(q, k, v, dk ** -0.5), **_tolerance(dtype))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("n", "prefix"), [(1, 5), (9, 40), (300, 17)])
def test_offset_causal_matches_float64(device: str, n: int, prefix: int) -> None:
    gen = torch.Generator().manual_seed(n + prefix)
    heads, dk, dv = 2, 24, 16
    for dtype in _dtypes(device):
        q = torch.randn(n, heads, dk, generator=gen).to(device, dtype)
        k = torch.randn(prefix + n, heads, dk, generator=gen).to(device, dtype)
        v = torch.randn(prefix + n, heads, dv, generator=gen).to(device, dtype)
        torch.testing.assert_close(offset_causal(q, k, v, 0.3).double(), _reference(q, k, v, 0.3),
                                   **_tolerance(dtype))


def test_fresh_prompts_are_the_lengths_that_decompress() -> None:
    up = LatentUpProj([], num_heads=16, nope_dim=128, rope_dim=64, v_head_dim=128, kv_lora_rank=512)
    cap = 5000 * up.decompressed_elements(1)  # small enough that the cap falls inside the range
    for forms in (LatentForms(), LatentForms(min_work=0), LatentForms(min_work=1 << 62), LatentForms(1000, cap)):
        got = forms.fresh_prompts(9000, up.decompressed_elements)
        want = [n for n in range(1, 9001) if forms.decompresses(n, n, up.decompressed_elements(n))]
        assert list(got) == want
    assert LatentForms().fresh_prompts(8192, up.decompressed_elements).start == math.isqrt(1 << 22)


def test_torch_backend_plans_the_buckets_of_its_fresh_prompts() -> None:
    from tierlm.attention.mla_torch import MLATorchBackend
    from tierlm.kvcache.pool import KVLayout, KVPool

    pool = KVPool(KVLayout.latent(1, 576, torch.float32), 4, 4, torch.device("cpu"))
    up = LatentUpProj([], num_heads=16, nope_dim=128, rope_dim=64, v_head_dim=128, kv_lora_rank=512)
    table = torch.zeros(2, 16, dtype=torch.int32)
    attn = MLATorchBackend(pool, table, num_heads=16, head_dim=576, scale=0.1, value_dim=128, up_proj=up)
    assert attn.fresh_lengths(8192) == bucket_lengths(2048, 8192)
    assert attn.fresh_lengths(2047) == []
    absorbed = MLATorchBackend(pool, table, num_heads=16, head_dim=576, scale=0.1, value_dim=128, up_proj=up,
                               forms=LatentForms.named("absorbed"))
    assert absorbed.fresh_lengths(8192) == []
    attn.warm_up(8192, torch.float32)  # nothing to plan on a CPU: returns at once
