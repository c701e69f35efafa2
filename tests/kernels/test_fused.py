"""Fused RMSNorm(+residual) and SiLU·mul against the torch layers (GPU, or the Triton interpreter)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("triton")

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
    print("ok")
""")


def test_fused_kernels_match_torch():
    env = dict(os.environ)
    import torch
    if not torch.cuda.is_available():
        env["TRITON_INTERPRET"] = "1"
    r = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-3000:]
