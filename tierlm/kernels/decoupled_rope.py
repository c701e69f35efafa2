"""The decoupled rotary embedding of latent attention (`tierlm.layers.decoupled_rotary`) in one launch.

In torch the rotation of the query heads' rope parts and of the shared rope key takes about twenty small
kernels per layer (the table lookups, float32 widening, four products, two sums, the concatenation, the
narrowing, for q and for k), each a launch of a microsecond or more at decode for a few kilobytes. Here one
program takes a token's rows: its `num_heads` query heads and, as one more row, its key.

Bit for bit the torch layer's arithmetic: inputs widened to float32, `x1 * cos - x2 * sin` and `x2 * cos + x1 *
sin` each product and sum rounded to float32 on its own (the launch turns off fused multiply-adds), the result
narrowed to the input dtype once. The three pairings (`STYLES` of the layer) read and write the same dims
the torch layer does.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from tierlm.kernels.launch import cdiv, next_power_of_2

PAIRINGS = {"half": 0, "interleave": 1, "complex": 2}
MAX_ROWS = 32  # head rows per program


@triton.jit
def _decoupled_rope_kernel(pos_ptr, q_ptr, k_ptr, cos_ptr, sin_ptr, q_out, k_out, num_heads, stride_qt, stride_qh,
                           stride_kt, stride_ot, stride_oh, stride_kot, stride_cos, HALF: tl.constexpr,
                           BLOCK_HALF: tl.constexpr, BLOCK_H: tl.constexpr, PAIRING: tl.constexpr,
                           IN_PLACE: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    rows = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    is_q = rows < num_heads
    ok = rows <= num_heads  # row num_heads is the key
    i = tl.arange(0, BLOCK_HALF)
    ok_i = i < HALF
    pos = tl.load(pos_ptr + t).to(tl.int64)
    cos = tl.load(cos_ptr + pos * stride_cos + i, mask=ok_i, other=0.0)[None, :]
    sin = tl.load(sin_ptr + pos * stride_cos + i, mask=ok_i, other=0.0)[None, :]
    if PAIRING == 0:  # (x_i, x_{i + d/2})
        first, second = i, i + HALF
    else:  # (x_2i, x_2i+1)
        first, second = 2 * i, 2 * i + 1
    src = tl.where(is_q, q_ptr + t * stride_qt + rows.to(tl.int64) * stride_qh, k_ptr + t * stride_kt)
    mask = ok[:, None] & ok_i[None, :]
    x1 = tl.load(src[:, None] + first[None, :], mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(src[:, None] + second[None, :], mask=mask, other=0.0).to(tl.float32)
    r1 = x1 * cos - x2 * sin
    r2 = x2 * cos + x1 * sin
    if IN_PLACE:  # a pairing may store a dim that another thread of the program has yet to load
        tl.debug_barrier()
    if PAIRING == 2:  # output interleaved like the input
        first_out, second_out = 2 * i, 2 * i + 1
    else:  # output as halves
        first_out, second_out = i, i + HALF
    dst = tl.where(is_q, q_out + t * stride_ot + rows.to(tl.int64) * stride_oh, k_out + t * stride_kot)
    dtype = q_out.dtype.element_ty
    tl.store(dst[:, None] + first_out[None, :], r1.to(dtype), mask=mask)
    tl.store(dst[:, None] + second_out[None, :], r2.to(dtype), mask=mask)


def decoupled_rope(positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                   pairing: str, q_out: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotated copies of `q` `[T, H, d]` and `k` `[T, d]` (any row strides, unit stride along d) at `positions`
    `[T]`, by the float32 tables `cos`/`sin` `[max_positions, d / 2]`, in `pairing` ("half", "interleave",
    "complex"), in `q`'s dtype: k's contiguous, q's in `q_out` if given (any row strides; it may be `q` itself:
    a program then waits for all of its rows' loads before it stores), else contiguous."""
    tokens, heads, dim = q.shape
    assert k.shape == (tokens, dim) and k.dtype == q.dtype and q.stride(2) == 1 and k.stride(1) == 1 and dim % 2 == 0
    assert cos.dtype == sin.dtype == torch.float32 and cos.stride() == sin.stride() and cos.stride(1) == 1
    if q_out is None:
        q_out = torch.empty(tokens, heads, dim, dtype=q.dtype, device=q.device)
    assert q_out.shape == q.shape and q_out.dtype == q.dtype and q_out.stride(2) == 1
    k_out = torch.empty(tokens, dim, dtype=q.dtype, device=q.device)
    if tokens == 0:
        return q_out, k_out
    block_h = min(MAX_ROWS, next_power_of_2(heads + 1))
    _decoupled_rope_kernel[(tokens, cdiv(heads + 1, block_h))](
        positions, q, k, cos, sin, q_out, k_out, heads, q.stride(0), q.stride(1), k.stride(0), q_out.stride(0),
        q_out.stride(1), k_out.stride(0), cos.stride(0), HALF=dim // 2, BLOCK_HALF=next_power_of_2(dim // 2),
        BLOCK_H=block_h, PAIRING=PAIRINGS[pairing], IN_PLACE=q_out.data_ptr() == q.data_ptr(),
        **launch_options(block_h, dim))
    return q_out, k_out


def launch_options(block_h: int, dim: int) -> dict:
    """Warps and compiler options of a launch of `block_h` rows of `dim`: products and sums rounded one by one
    (no fused multiply-add), as torch's separate kernels round them."""
    return dict(num_warps=1 if block_h * dim <= 1024 else 4, enable_fp_fusion=False)
