"""`benchmarks/read_floor.py`'s read kernels sum what they read (GPU, or the Triton interpreter): each program
its own blocks, with pointer loads and through TMA descriptors, so the rates it prints are of whole reads."""
from __future__ import annotations

import textwrap

import pytest

pytest.importorskip("triton")

from tests.kernels.interp import run_script  # noqa: E402

SCRIPT = textwrap.dedent("""
    import torch
    from triton.tools.tensor_descriptor import TensorDescriptor
    from benchmarks.read_floor import _read_kernel, _tma_read_kernel, tma_reads
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    src = torch.randn(8 * 64 * 256, generator=torch.Generator().manual_seed(0)).to(dev)
    out = torch.empty(8, device=dev)
    desc = TensorDescriptor(src, [src.numel() // 256, 256], [256, 1], [32, 256])
    _tma_read_kernel[(8,)](desc, out, BLOCK_R=32, COLS=256, ITERS=2)
    ref = src.view(8, -1).double().sum(1)
    assert torch.allclose(out.double(), ref, atol=1e-3), (out, ref)
    _read_kernel[(8,)](src, out, BLOCK=1024, ITERS=16)
    assert torch.allclose(out.double(), ref, atol=1e-3), (out, ref)
    # the sweep's launches as `per_size` times them: each on each buffer, its programs covering what it counts
    n = 64 * 256 * 16 * 2
    dtype = torch.bfloat16 if dev == "cuda" else torch.float32  # bf16 as per_size reads (its tiles fit shared memory)
    bufs = [torch.ones(n, device=dev, dtype=dtype), torch.ones(n, device=dev, dtype=dtype)]
    for label, calls, res, elements in tma_reads(n, bufs):
        for call in calls:
            res.zero_()
            call()
            assert float(res.sum(dtype=torch.float64)) == elements, (label, float(res.sum()), elements)
    print("ok")
""")


def test_read_kernels_sum_their_blocks():
    run_script(SCRIPT)
