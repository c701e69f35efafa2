"""The skinny (5-256 row) linear kernel against a float64 matmul, with pointer loads and with the weight
through a TMA descriptor (GPU, or the Triton interpreter)."""
from __future__ import annotations

import textwrap

import pytest

pytest.importorskip("triton")

from tests.kernels.interp import run_script  # noqa: E402

SCRIPT = textwrap.dedent("""
    import dataclasses
    import torch
    from tierlm.kernels.skinny_gemm import SkinnyConfig, block_m, skinny_gemm, split_counters
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    dtypes = [torch.float32] if dev == "cpu" else [torch.float32, torch.bfloat16, torch.float16]
    torch.manual_seed(0)
    cases = [(5, 40, 64, False, SkinnyConfig(16, 32, 1)),
             (17, 100, 200, True, SkinnyConfig(32, 64, 2)),  # K over the splits with a partial last tile
             (33, 64, 300, False, SkinnyConfig(16, 32, 4)),
             (8, 70, 96, True, SkinnyConfig(64, 16, 3)),  # three splits, a partial last row tile
             (256, 48, 64, False, SkinnyConfig(32, 32, 2)),
             (130, 24, 40, True, SkinnyConfig(16, 16, 8)),  # more splits asked than K tiles: 3 used
             (100, 40, 96, True, SkinnyConfig(16, 32, 2, block_m=32)),  # batch tiles with splits
             (256, 48, 64, False, SkinnyConfig(32, 32, 1, block_m=64))]
    for dtype in dtypes:
        for m, n, k, bias, cfg in cases:
            x = torch.randn(m, k, device=dev).to(dtype)
            w = torch.randn(n, k, device=dev).to(dtype)
            b = torch.randn(n, device=dev).to(dtype) if bias else None
            counters = split_counters(n, cfg, x.device)
            ref = x.double() @ w.double().T + (b.double() if bias else 0)
            first = skinny_gemm(x, w, b, cfg, counters)
            assert first.shape == (m, n) and first.dtype == dtype
            tol = 1e-4 if dtype == torch.float32 else 3e-2 * ref.abs().max().item()
            assert (first.double() - ref).abs().max().item() <= tol, (dtype, m, n, k, bias, cfg)
            if counters is not None:
                assert not counters.any(), "every split launch leaves its counters zeroed"
            again = skinny_gemm(x, w, b, cfg, counters)
            assert torch.equal(again, first), "splits are summed in one order whichever finishes first"
        # weight tiles by the Tensor Memory Accelerator: the same tiles, so the same bits as the pointer loads
        # (tails of N and K zero-filled by the descriptor; 1-4 rows too, as the batch-1 comparison runs them)
        for m, n, k, bias, cfg in [(1, 40, 64, False, SkinnyConfig(16, 32, 1, tma=True)),
                                   (4, 100, 200, True, SkinnyConfig(32, 64, 2, tma=True)),
                                   (17, 70, 96, True, SkinnyConfig(64, 16, 3, tma=True)),
                                   (100, 40, 96, True, SkinnyConfig(16, 32, 2, block_m=32, tma=True))]:
            x = torch.randn(m, k, device=dev).to(dtype)
            w = torch.randn(n, k, device=dev).to(dtype)
            b = torch.randn(n, device=dev).to(dtype) if bias else None
            counters = split_counters(n, cfg, x.device)
            got = skinny_gemm(x, w, b, cfg, counters)
            plain = dataclasses.replace(cfg, tma=False)
            assert torch.equal(got, skinny_gemm(x, w, b, plain, split_counters(n, plain, x.device))), (dtype, cfg)
            ref = x.double() @ w.double().T + (b.double() if bias else 0)
            tol = 1e-4 if dtype == torch.float32 else 3e-2 * ref.abs().max().item()
            assert (got.double() - ref).abs().max().item() <= tol, (dtype, m, n, k, bias, cfg)
            assert counters is None or not counters.any()
    assert SkinnyConfig(64, 128, 2, tma=True).label().endswith(" tma")
    x3 = torch.randn(2, 4, 64, device=dev)  # leading dimensions are flattened and restored
    assert skinny_gemm(x3, torch.randn(24, 64, device=dev), None, SkinnyConfig(16, 32)).shape == (2, 4, 24)
    assert [block_m(r) for r in (5, 16, 17, 200)] == [16, 16, 32, 256]
    assert [block_m(r, SkinnyConfig(block_m=64)) for r in (5, 100)] == [16, 64]
    for bad, words in [(lambda: skinny_gemm(torch.randn(257, 8, device=dev), torch.randn(4, 8, device=dev)),
                        "at most 256 rows"),
                       (lambda: skinny_gemm(torch.randn(9, 8, device=dev), torch.randn(4, 16, device=dev)),
                        "does not match"),
                       (lambda: skinny_gemm(torch.randn(9, 64, device=dev), torch.randn(4, 64, device=dev), None,
                                            SkinnyConfig(16, 16, 2)), "counters"),
                       (lambda: SkinnyConfig(8, 16), ">= 16"), (lambda: SkinnyConfig(block_m=8), ">= 16"),
                       (lambda: skinny_gemm(torch.randn(9, 70, device=dev), torch.randn(16, 70, device=dev), None,
                                            SkinnyConfig(16, 16, tma=True)), "16-byte aligned")]:
        try:
            bad()
        except ValueError as e:
            assert words in str(e), (words, str(e))
        else:
            raise AssertionError(f"accepted: {words}")
    print("ok")
""")


def test_skinny_gemm_matches_a_float64_matmul():
    run_script(SCRIPT)
