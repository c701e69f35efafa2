"""How kernels move values between the model's dtype and the KV pool's element type.

Writers round with `to_pool`, so every writer of a pool (Triton store, decode's fused store, the extend
kernel, the torch path in `kvcache.pool`) stores the same bytes. Readers of an fp8 pool widen K/V to fp16
rather than to the model's bf16 (`compute_dtype`, `widen_q`): e4m3 -> fp16 is one conversion per two values on
the device, where e4m3 -> bf16 takes a second, slow conversion per value that bounds the decode loop.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

FP16_MAX = tl.constexpr(torch.finfo(torch.float16).max)
FP8_E4M3_MAX = tl.constexpr(torch.finfo(torch.float8_e4m3fn).max)  # 448; `kvcache.pool.put_rows` clamps alike
_TL_DTYPES = {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16, torch.float32: tl.float32}


@triton.jit
def to_pool(x, POOL: tl.constexpr):
    """`x` rounded to the KV pool's element type `POOL`. fp8 e4m3 saturates at +-448 (its largest finite value)
    first, as `kvcache.pool.put_rows` does."""
    if POOL == tl.float8e4nv:
        x = tl.clamp(x.to(tl.float32), -FP8_E4M3_MAX, FP8_E4M3_MAX)
    return x.to(POOL)


@triton.jit
def widen_q(q, WIDE: tl.constexpr):
    """The query in the type K/V are widened to. Into fp16 (from bf16, over an fp8 pool) scores stay exact: a
    bf16 value inside fp16's normal range is an fp16 and so is every e4m3 value; magnitudes past fp16's
    largest value (orders beyond real models' queries) saturate, and probabilities gain precision over bf16."""
    if WIDE == tl.float16:
        q = tl.clamp(q.to(tl.float32), -FP16_MAX, FP16_MAX)
    return q.to(WIDE)


def compute_dtype(q_dtype: torch.dtype, pool_dtype: torch.dtype) -> tl.dtype:
    """The type a reader widens K/V (and casts the query) to for its matrix products: fp16 when a 16-bit model
    reads an fp8 pool, otherwise the query's own type."""
    if pool_dtype == torch.float8_e4m3fn and q_dtype in (torch.float16, torch.bfloat16):
        return tl.float16
    return _TL_DTYPES[q_dtype]
