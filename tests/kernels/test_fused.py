"""Fused RMSNorm(+residual) and SiLU·mul against the torch layers (GPU, or the Triton interpreter)."""
from __future__ import annotations

import textwrap

import pytest

pytest.importorskip("triton")

from tests.kernels.interp import run_script  # noqa: E402

SCRIPT = textwrap.dedent("""
    import torch
    import torch.nn.functional as F
    from tierlm.kernels.fused import rmsnorm, silu_mul
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    for dtype in ([torch.float32] if dev == "cpu" else [torch.float32, torch.bfloat16, torch.float16]):
        for rows, cols in [(1, 64), (7, 96), (33, 130)]:
            x = torch.randn(rows, cols, device=dev).to(dtype)
            r = torch.randn(rows, cols, device=dev).to(dtype)
            w = (torch.rand(cols, device=dev) + 0.5).to(dtype)
            s = (x.float() + r.float()).to(dtype)
            ref = w * (s.float() * torch.rsqrt(s.float().pow(2).mean(-1, keepdim=True) + 1e-6)).to(dtype)
            out, res = rmsnorm(x, w, 1e-6, r)
            tol = 1e-5 if dtype == torch.float32 else 1e-2
            assert torch.allclose(res.float(), s.float(), atol=tol), "residual"
            assert torch.allclose(out.float(), ref.float(), atol=tol, rtol=tol), (dtype, rows, cols)
            out2, none = rmsnorm(x, w, 1e-6)
            ref2 = w * (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-6)).to(dtype)
            assert none is None and torch.allclose(out2.float(), ref2.float(), atol=tol, rtol=tol)
            gu = torch.randn(rows, 2 * cols, device=dev).to(dtype)
            g, u = gu.chunk(2, -1)
            assert torch.allclose(silu_mul(gu).float(), (F.silu(g) * u).float(), atol=tol, rtol=tol)
    from tierlm.kernels.fused import qk_norm_rope
    from tierlm.layers.norm import RMSNorm
    from tierlm.layers.rotary import RotaryEmbedding
    for dtype in ([torch.float32] if dev == "cpu" else [torch.float32, torch.bfloat16]):
        for H, KVH, D, norm, T in [(4, 2, 32, True, 5), (8, 1, 64, False, 5), (2, 2, 128, True, 5),
                                   (3, 1, 32, True, 37)]:
            rope = RotaryEmbedding(D, 64, 10000.0, {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                   "high_freq_factor": 4.0, "original_max_position_embeddings": 16})
            rope = rope.to(dev)
            qkv = torch.randn(T, (H + 2 * KVH) * D, device=dev).to(dtype)
            pos = torch.tensor([0, 3, 17, 40, 63] * (T // 5) + list(range(T % 5)), device=dev)
            qn, kn = RMSNorm(D).to(dev).to(dtype), RMSNorm(D).to(dev).to(dtype)
            with torch.no_grad():
                qn.weight.uniform_(0.5, 1.5)
                kn.weight.uniform_(0.5, 1.5)
            q = qkv[:, :H * D].reshape(T, H, D)
            k = qkv[:, H * D:(H + KVH) * D].reshape(T, KVH, D)
            with torch.no_grad():
                if norm:
                    q, k = qn._norm(q), kn._norm(k)
                rq, rk = rope(pos, q, k)
                fq, fk = qk_norm_rope(qkv, pos, rope.cos, rope.sin, H, KVH, D, qn.weight if norm else None,
                                      kn.weight if norm else None, 1e-6)
            tol = 1e-5 if dtype == torch.float32 else 3e-2
            assert torch.allclose(fq.float(), rq.float(), atol=tol, rtol=tol), ("q", dtype, H, KVH, D)
            assert torch.allclose(fk.float(), rk.float(), atol=tol, rtol=tol), ("k", dtype, H, KVH, D)
    print("ok")
""")


def test_fused_kernels_match_torch():
    run_script(SCRIPT)
