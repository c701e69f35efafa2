"""The small-batch linear kernel against a float32 matmul (GPU, or the Triton interpreter)."""
from __future__ import annotations

import textwrap

import pytest

pytest.importorskip("triton")

from tests.kernels.interp import run_script  # noqa: E402

SCRIPT = textwrap.dedent("""
    import torch
    from tierlm.kernels.gemv import GemvConfig, gemv, rmsnorm_gemv, silu_mul_gemv
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    dtypes = [torch.float32] if dev == "cpu" else [torch.float32, torch.bfloat16, torch.float16]
    for dtype in dtypes:
        for m, n, k, bias, cfg in [(1, 40, 64, False, GemvConfig(4, 32, 4)), (3, 17, 100, True, GemvConfig(8, 64, 4)),
                                   (8, 64, 256, False, GemvConfig(2, 128, 8)), (5, 9, 48, True, GemvConfig(16, 16, 4)),
                                   (1, 40, 200, True, GemvConfig(4, 32, 4, True)),  # pipelined: K over 6 tiles
                                   (3, 17, 100, False, GemvConfig(8, 64, 4, True)),
                                   (1, 24, 260, True, GemvConfig(4, 64, 4, True, 2)),
                                   (1, 40, 100, True, GemvConfig(1, 128, 4))]:  # a row per program, in one tile
            x = torch.randn(m, k, device=dev).to(dtype)
            w = torch.randn(n, k, device=dev).to(dtype)
            b = torch.randn(n, device=dev).to(dtype) if bias else None
            ref = x.double() @ w.double().T + (b.double() if bias else 0)
            got = gemv(x, w, b, cfg)
            assert got.shape == (m, n) and got.dtype == dtype
            tol = 1e-4 if dtype == torch.float32 else 3e-2 * ref.abs().max().item()
            assert (got.double() - ref).abs().max().item() <= tol, (dtype, m, n, k, bias)
        x3 = torch.randn(2, 1, 64, device=dev).to(dtype)  # leading dimensions are flattened and restored
        w = torch.randn(24, 64, device=dev).to(dtype)
        assert gemv(x3, w, None, GemvConfig(4, 32, 4)).shape == (2, 1, 24)
        # fused prologues against the unfused layers they replace
        from tierlm.kernels.fused import rmsnorm, silu_mul
        for m, k, n, cfg in [(1, 64, 40, GemvConfig(4, 32, 4)), (3, 100, 24, GemvConfig(8, 64, 4)),
                             (1, 100, 40, GemvConfig(4, 32, 4, True)), (2, 64, 24, GemvConfig(2, 16, 4, True)),
                             (5, 1100, 8, GemvConfig(4, 256, 4, True)),  # the norm's statistic in two tiles
                             (2, 300, 16, GemvConfig(4, 64, 4, True, 2)),  # two weight tiles ahead
                             (1, 100, 24, GemvConfig(1, 128, 4))]:  # the whole row in one tile wider than K
            x = torch.randn(m, k, device=dev).to(dtype)
            r = torch.randn(m, k, device=dev).to(dtype)
            nw = (torch.rand(k, device=dev) + 0.5).to(dtype)
            w = torch.randn(n, k, device=dev).to(dtype)
            for res in (r, None):
                normed, new_res = rmsnorm(x, nw, 1e-6, res)
                ref = normed.double() @ w.double().T
                got, got_res = rmsnorm_gemv(x, res, nw, 1e-6, w, None, cfg)
                tol = 1e-4 if dtype == torch.float32 else 3e-2 * ref.abs().max().item()
                assert (got.double() - ref).abs().max().item() <= tol, ("rmsnorm_gemv", dtype, m, k, res is None)
                assert (got_res is None) == (res is None)
                if res is not None:
                    assert torch.equal(got_res, new_res), "the new residual is the rounded sum, as unfused"
            gu = torch.randn(m, 2 * k, device=dev).to(dtype)
            ref = silu_mul(gu).double() @ w.double().T
            got = silu_mul_gemv(gu, w, cfg)
            tol = 1e-4 if dtype == torch.float32 else 3e-2 * ref.abs().max().item()
            assert (got.double() - ref).abs().max().item() <= tol, ("silu_mul_gemv", dtype, m, k)
    try:
        GemvConfig(4, 32, 4, False, 2)
    except ValueError as e:
        assert "ahead" in str(e)
    else:
        raise AssertionError("two tiles ahead without the pipelined loop was accepted")
    try:
        gemv(torch.randn(9, 8, device=dev), torch.randn(4, 8, device=dev))
    except ValueError as e:
        assert "at most 8 rows" in str(e)
    else:
        raise AssertionError("9 rows were accepted")
    print("ok")
""")


def test_gemv_matches_a_float64_matmul():
    run_script(SCRIPT)
