"""Scatter new K and V rows into their KV-pool slots: one launch per layer writes K and V, all heads."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from tierlm.kernels.launch import next_power_of_2
from tierlm.kernels.pool_dtype import to_pool


@triton.jit
def _store_kv_kernel(
    k_ptr, v_ptr, k_buf, v_buf, loc_ptr,
    stride_kt, stride_kh, stride_vt, stride_vh,  # new K/V: [T, KVH, D], last dim contiguous
    stride_buf_s, stride_buf_h,  # pool buffers: [num_slots, KVH, D], last dim contiguous
    NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr, ROUND_BACK: tl.constexpr,
):
    # One program per new token; it moves that token's K and V for all heads (BLOCK_H x BLOCK_D tile).
    t = tl.program_id(0)
    slot = tl.load(loc_ptr + t).to(tl.int64)  # int64: slot * stride overflows int32 on big pools
    h = tl.arange(0, BLOCK_H)[:, None]
    d = tl.arange(0, BLOCK_D)[None, :]
    mask = (h < NUM_HEADS) & (d < HEAD_DIM)
    t64 = t.to(tl.int64)
    k = tl.load(k_ptr + t64 * stride_kt + h * stride_kh + d, mask=mask)
    v = tl.load(v_ptr + t64 * stride_vt + h * stride_vh + d, mask=mask)
    dst = slot * stride_buf_s + h * stride_buf_h + d
    k = to_pool(k, k_buf.dtype.element_ty)
    v = to_pool(v, v_buf.dtype.element_ty)
    tl.store(k_buf + dst, k, mask=mask)
    tl.store(v_buf + dst, v, mask=mask)
    if ROUND_BACK:
        tl.store(k_ptr + t64 * stride_kt + h * stride_kh + d, k.to(k_ptr.dtype.element_ty), mask=mask)
        tl.store(v_ptr + t64 * stride_vt + h * stride_vh + d, v.to(v_ptr.dtype.element_ty), mask=mask)


def store_kv(k: torch.Tensor, v: torch.Tensor, k_buf: torch.Tensor, v_buf: torch.Tensor,
             out_loc: torch.Tensor, *, round_back: bool = False) -> bool:
    """Write `k`/`v` `[T, KVH, D]` into rows `out_loc` `[T]` of the pool buffers `[num_slots, KVH, D]`.

    The new K/V may be strided views (e.g. slices of a fused QKV output) as long as the head_dim is
    contiguous; they are cast to the pool's dtype on the way. `round_back`: when the pool's dtype differs,
    `k`/`v` are overwritten with the values the pool now holds (so attention over them reads what a later
    pass reads from the pool). Returns whether `k`/`v` hold pool values (rounded back, or the same dtype).
    """
    num_tokens, num_heads, head_dim = k.shape
    same = k_buf.dtype == k.dtype
    round_back = round_back and not same
    if num_tokens == 0:
        return same or round_back
    assert v.shape == k.shape and k_buf.shape[1:] == (num_heads, head_dim) and v_buf.stride() == k_buf.stride()
    assert k.stride(2) == 1 and v.stride(2) == 1 and k_buf.stride(2) == 1
    _store_kv_kernel[(num_tokens,)](
        k, v, k_buf, v_buf, out_loc,
        k.stride(0), k.stride(1), v.stride(0), v.stride(1), k_buf.stride(0), k_buf.stride(1),
        NUM_HEADS=num_heads, HEAD_DIM=head_dim,
        BLOCK_H=next_power_of_2(num_heads), BLOCK_D=next_power_of_2(head_dim),
        ROUND_BACK=round_back, num_warps=4,
    )
    return same or round_back
