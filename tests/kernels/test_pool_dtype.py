"""What `kernels.pool_dtype` relies on: widening an fp8 pool's values and a bf16 query to fp16 loses nothing."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

import triton.language as tl  # noqa: E402

from tierlm.kernels.pool_dtype import compute_dtype  # noqa: E402


def test_compute_dtype():
    fp8 = torch.float8_e4m3fn
    assert compute_dtype(torch.bfloat16, fp8) == tl.float16
    assert compute_dtype(torch.float16, fp8) == tl.float16
    assert compute_dtype(torch.float32, fp8) == tl.float32  # the fp32 parity path stays exact as it was
    assert compute_dtype(torch.bfloat16, torch.bfloat16) == tl.bfloat16
    assert compute_dtype(torch.float32, torch.float16) == tl.float32


def test_every_e4m3_value_is_an_fp16():
    values = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(torch.float8_e4m3fn).float()
    finite = values[~values.isnan()]
    assert finite.numel() == 254
    assert torch.equal(finite.half().float(), finite)


def test_bf16_queries_in_fp16_normal_range_are_exact():
    gen = torch.Generator().manual_seed(0)
    mags = torch.exp2(torch.empty(100_000).uniform_(-14, 15.99, generator=gen))  # fp16's normal exponents
    q = (mags * torch.randn(100_000, generator=gen).sign()).bfloat16()
    assert torch.equal(q.half().float(), q.float())
    # past fp16's largest value the kernel saturates first (`widen_q`); unclamped, the cast would overflow
    assert torch.isinf(torch.tensor([70000.0]).bfloat16().half()).all()
