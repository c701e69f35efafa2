"""The persistent decode feed-forward against the unfused layers it replaces (GPU, or the Triton interpreter,
where its two halves run as two launches)."""
from __future__ import annotations

import textwrap

import pytest

pytest.importorskip("triton")

from tests.kernels.interp import run_script  # noqa: E402

SCRIPT = textwrap.dedent("""
    import torch
    from tierlm.kernels.fused import rmsnorm, silu_mul
    from tierlm.kernels.mlp_decode import MlpConfig, mlp_decode, new_barrier, resident_programs
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    dtypes = [torch.float32] if dev == "cpu" else [torch.float32, torch.bfloat16, torch.float16]
    barrier = new_barrier(dev)
    for dtype in dtypes:
        # odd sizes: tiles past the end of H and I, fewer tiles than programs, K steps over several tiles
        for m, hidden, inter, cfg in [(1, 64, 40, MlpConfig(4, 32, 4, 32, 4, ahead=1)),
                                      (3, 100, 24, MlpConfig(8, 64, 2, 16, ahead=3)),
                                      (4, 48, 70, MlpConfig(2, 16, 8, 32, 4, lanes=False)),
                                      (2, 200, 3, MlpConfig(4, 64, 4, 64)),
                                      (1, 96, 50, MlpConfig(4, 32, 8, 16, lanes=False))]:
            programs = resident_programs(cfg, m, hidden, inter, dtype, torch.device(dev)) if dev == "cuda" else 4
            x = torch.randn(m, hidden, device=dev).to(dtype)
            r = torch.randn(m, hidden, device=dev).to(dtype)
            nw = (torch.rand(hidden, device=dev) + 0.5).to(dtype)
            gu = (torch.randn(2 * inter, hidden, device=dev) / hidden ** 0.5).to(dtype)
            down = (torch.randn(hidden, inter, device=dev) / inter ** 0.5).to(dtype)
            for res in (r, None):
                normed, new_res = rmsnorm(x, nw, 1e-6, res)
                ref = silu_mul(normed.double() @ gu.double().T).double() @ down.double().T
                got, got_res = mlp_decode(x, res, nw, 1e-6, gu, down, cfg, programs, barrier)
                assert got.shape == (m, hidden) and got.dtype == dtype
                tol = 1e-4 if dtype == torch.float32 else 3e-2 * ref.abs().max().item()
                err = (got.double() - ref).abs().max().item()
                assert err <= tol, (dtype, m, hidden, inter, res is None, err)
                assert (got_res is None) == (res is None)
                if res is not None:
                    assert torch.equal(got_res, new_res), "the new residual is the rounded sum, as unfused"
                again, _ = mlp_decode(x, res, nw, 1e-6, gu, down, cfg, programs, barrier)
                assert torch.equal(again, got), "same inputs, same bits"
    try:
        mlp_decode(torch.randn(5, 8, device=dev), None, torch.ones(8, device=dev), 1e-6, torch.randn(8, 8, device=dev),
                   torch.randn(8, 4, device=dev), MlpConfig(), 4, barrier)
    except ValueError as e:
        assert "at most 4 rows" in str(e)
    else:
        raise AssertionError("5 rows were accepted")
    try:
        MlpConfig(ahead=4)
    except ValueError as e:
        assert "ahead" in str(e)
    else:
        raise AssertionError("four tiles ahead were accepted")
    print("ok")
""")


def test_mlp_decode_matches_the_unfused_layers():
    run_script(SCRIPT)
