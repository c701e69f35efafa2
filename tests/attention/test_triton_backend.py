"""TritonBackend equals TorchNativeBackend (prefill with prefixes, decode, CUDA-graph-style decode buffers),
and the offline engine's greedy tokens are the same with either backend.

On a GPU the cases run compiled in bf16/fp16/fp32; without one, in fp32 under Triton's interpreter in a
child process (so this process never imports Triton in interpreter mode).
"""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from tests.kernels.backend_cases import BACKEND_CASES, FP8_BACKEND_CASES, run  # noqa: E402
from tests.kernels.interp import assert_all_ok, assert_case_ok, run_interpreted  # noqa: E402


@pytest.fixture(scope="module")
def interpreted() -> dict[str, str]:
    return run_interpreted("tests.kernels.backend_cases", list(BACKEND_CASES))


@pytest.mark.parametrize("name", list(BACKEND_CASES))
def test_triton_backend_matches_torch(name: str, request: pytest.FixtureRequest) -> None:
    # greedy engine parity only in fp32: low-precision ties may legitimately flip
    dtypes = [torch.float32] if name.startswith("engine") else [torch.bfloat16, torch.float16, torch.float32]
    assert_case_ok(name, request, lambda: run([name], "cuda", dtypes))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp8 rounding is checked on the device only")
@pytest.mark.parametrize("name", list(FP8_BACKEND_CASES))
def test_triton_backend_matches_torch_fp8_kv(name: str) -> None:
    dtypes = [torch.float32] if "engine" in name else [torch.bfloat16, torch.float16]
    results = run([name], "cuda", dtypes)
    assert_all_ok(results)


@pytest.mark.parametrize("head_dim, threshold, expect", [
    (32, 3, {("decode", 2): False, ("decode", 3): True, ("decode", 5): True, ("prefill", 3): False}),
    (32, 0, {("decode", 5): False}),
    (48, 1, {("decode", 5): False}),  # not a power of two: its halves cannot be rotated in a tile
])
def test_fuses_rope_from_batch_size(head_dim: int, threshold: int, expect: dict) -> None:
    from tests.kernels.backend_cases import _batch
    from tierlm.attention.triton_backend import TritonAttentionConfig, TritonBackend
    from tierlm.kvcache.layout import KVLayout
    from tierlm.kvcache.pool import KVPool

    pool = KVPool(KVLayout.gqa(1, 2, head_dim, torch.float32), 8, 4, torch.device("cpu"))
    table = torch.arange(64, dtype=torch.int32).view(8, 8) % 32
    backend = TritonBackend(pool, table, 4, head_dim, head_dim ** -0.5,
                            TritonAttentionConfig(decode_fused_rope=threshold))
    for (mode, size), fused in expect.items():
        ext = [1] * size if mode == "decode" else [2] * size
        batch = _batch(mode, table, list(range(size)), [3] * size, ext)
        assert backend.fuses_rope(batch) is fused, (mode, size)


def test_decode_launch_follows_batch_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each decode call runs the launch its batch size maps to (`TritonAttentionConfig.decode_launches`)."""
    from types import SimpleNamespace

    from tierlm.attention import triton_backend
    from tierlm.kvcache.layout import KVLayout
    from tierlm.kvcache.pool import KVPool

    seen = []
    monkeypatch.setattr(triton_backend, "decode_attention", lambda *a, block_n, num_warps, num_stages, **kw:
                        seen.append((a[0].shape[0], block_n, num_warps, num_stages)))
    pool = KVPool(KVLayout.gqa(1, 2, 32, torch.float32), 8, 4, torch.device("cpu"))
    cfg = triton_backend.TritonAttentionConfig(decode_launches=((1, 16, 2, 1), (4, 32, 4, 2)))
    backend = triton_backend.TritonBackend(pool, torch.zeros(8, 8, dtype=torch.int32), 4, 32, 32 ** -0.5, cfg)
    meta = SimpleNamespace(req_rows=None, seq_lens=None, mid_o=None, mid_lse=None, order=None, plan=None)
    for size in (1, 3, 4, 7):
        q = torch.zeros(size, 4, 32)
        backend._decode(q, None, None, torch.empty_like(q), meta)
    assert seen == [(1, 16, 2, 1), (3, 16, 2, 1), (4, 32, 4, 2), (7, 32, 4, 2)]


def test_only_skewed_decode_steps_split_by_tokens() -> None:
    """With the GPU's defaults, a decode step from `decode_balanced` requests on whose longest request is at least
    its size's `decode_skew` times the mean length (2.5 below 64 requests, 3 below 128, then 4) takes the balanced
    launch (variant 1), any other step the per-request one; every size from the threshold on offers both launches
    (the graph runner captures both at each of those sizes)."""
    from tierlm.attention.triton_backend import TritonAttentionConfig, TritonBackend
    from tierlm.kvcache.layout import KVLayout
    from tierlm.kvcache.pool import KVPool

    pool = KVPool(KVLayout.gqa(1, 2, 32, torch.float32), 8, 4, torch.device("cpu"))
    cfg = TritonAttentionConfig()
    assert cfg.decode_balanced == 16
    assert [cfg.skew_threshold(n) for n in (15, 16, 63, 64, 127, 128, 256)] == [float("inf"), 2.5, 2.5, 3, 3, 4, 4]
    backend = TritonBackend(pool, torch.zeros(8, 8, dtype=torch.int32), 4, 32, 32 ** -0.5, cfg)
    assert backend.decode_variants(8) == (0,) and backend.decode_variants(16) == backend.decode_variants(256) == (0, 1)
    one_long = [500] * 255 + [32768]
    assert backend.decode_variant(one_long) == 1
    assert backend.decode_variant([500] * 248 + [8192] * 8) == 1
    assert backend.decode_variant([100 + 8 * i for i in range(256)]) == 0  # 100..2140: mildly mixed
    assert backend.decode_variant([500] * 256) == 0
    assert backend.decode_variant([500] * 14 + [32768]) == 0  # below the threshold's size
    # each size's boundary: the longest at exactly its threshold times the mean takes the plan, one token less not
    for n, ratio in ((16, 2.5), (40, 2.5), (64, 3), (100, 3), (128, 4), (256, 4)):
        short, longest = round(20 * (n - ratio)), round(20 * ratio * (n - 1))  # longest == ratio * mean exactly
        assert longest * n == ratio * (short * (n - 1) + longest), (n, ratio)
        assert backend.decode_variant([short] * (n - 1) + [longest]) == 1, (n, ratio)
        assert backend.decode_variant([short] * (n - 1) + [longest - 1]) == 0, (n, ratio)
    off = TritonBackend(pool, torch.zeros(8, 8, dtype=torch.int32), 4, 32, 32 ** -0.5,
                        TritonAttentionConfig(decode_balanced=0))
    assert off.decode_variants(256) == (0,) and off.decode_variant(one_long) == 0
