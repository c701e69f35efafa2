"""Extend (prefill / chunked prefill / prefix hit) attention: cached prefix + causal new tokens, one softmax.

Grid `(batch, head, q_block)`. A program loads `BLOCK_M` new queries of one request and one head, then
(1) walks the request's cached prefix `[0, prefix_len)`, gathering K/V from the pool through
`req_to_token`, and (2) walks the request's new K/V `[0, min(extend_len, block_end))` straight from the
contiguous projections with a causal mask. Both loops feed the same online softmax, so the result equals
attention over the whole sequence with a causal mask offset by the prefix length.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _online_softmax_step(q, k, v, mask, m_i, l_i, acc, sm_scale_log2, DOT_PRECISION: tl.constexpr):
    qk = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)
    qk = tl.where(mask, qk * sm_scale_log2, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(qk, axis=1))
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(qk - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, axis=1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
    return m_new, l_i, acc


@triton.jit
def _extend_kernel(
    q_ptr, k_ptr, v_ptr, out_ptr, k_buf, v_buf, req_to_token, req_rows, prefix_lens, qo_indptr,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_ot, stride_oh,
    stride_buf_s, stride_buf_h, stride_r2t, sm_scale_log2,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    b = tl.program_id(0)
    h = tl.program_id(1)
    m0 = tl.program_id(2) * BLOCK_M
    kv_head = h // GROUP
    q_start = tl.load(qo_indptr + b)
    ext_len = tl.load(qo_indptr + b + 1) - q_start
    live = m0 < ext_len  # q-blocks past this request's end run zero iterations and store nothing
    prefix_len = tl.where(live, tl.load(prefix_lens + b), 0)
    causal_end = tl.where(live, tl.minimum(ext_len, m0 + BLOCK_M), 0)
    row = tl.load(req_rows + b).to(tl.int64)

    offs_m = m0 + tl.arange(0, BLOCK_M)
    mask_m = offs_m < ext_len
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < HEAD_DIM
    tok = q_start.to(tl.int64) + offs_m
    q = tl.load(q_ptr + tok[:, None] * stride_qt + h * stride_qh + offs_d[None, :],
                mask=mask_m[:, None] & mask_d[None, :], other=0.0)
    m_i = tl.full([BLOCK_M], -1.0e30, dtype=tl.float32)  # finite: masked tiles never make NaN
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

    # (1) cached prefix, through req_to_token into the pool
    for n0 in range(0, prefix_len, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        mask_n = offs_n < prefix_len
        slots = tl.load(req_to_token + row * stride_r2t + offs_n, mask=mask_n, other=0).to(tl.int64)
        off = slots[:, None] * stride_buf_s + kv_head * stride_buf_h + offs_d[None, :]
        kv_mask = mask_n[:, None] & mask_d[None, :]
        k = tl.load(k_buf + off, mask=kv_mask, other=0.0).to(q.dtype)
        v = tl.load(v_buf + off, mask=kv_mask, other=0.0).to(q.dtype)
        m_i, l_i, acc = _online_softmax_step(q, k, v, mask_n[None, :], m_i, l_i, acc, sm_scale_log2,
                                             DOT_PRECISION)

    # (2) the new tokens themselves, causally (query m sees new keys n <= m)
    for n0 in range(0, causal_end, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        mask_n = offs_n < ext_len
        ktok = (q_start.to(tl.int64) + offs_n)[:, None]
        kv_mask = mask_n[:, None] & mask_d[None, :]
        k = tl.load(k_ptr + ktok * stride_kt + kv_head * stride_kh + offs_d[None, :], mask=kv_mask, other=0.0)
        v = tl.load(v_ptr + ktok * stride_vt + kv_head * stride_vh + offs_d[None, :], mask=kv_mask, other=0.0)
        causal = (offs_n[None, :] <= offs_m[:, None]) & mask_n[None, :]
        m_i, l_i, acc = _online_softmax_step(q, k.to(q.dtype), v.to(q.dtype), causal, m_i, l_i, acc,
                                             sm_scale_log2, DOT_PRECISION)

    out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
    tl.store(out_ptr + tok[:, None] * stride_ot + h * stride_oh + offs_d[None, :],
             out.to(out_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_d[None, :])


def extend_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, k_buf: torch.Tensor,
                     v_buf: torch.Tensor, req_to_token: torch.Tensor, req_rows: torch.Tensor,
                     prefix_lens: torch.Tensor, qo_indptr: torch.Tensor, max_extend: int, sm_scale: float, *,
                     block_m: int = 64, block_n: int = 64, num_warps: int = 4, num_stages: int = 3) -> torch.Tensor:
    """Attention of new tokens `q` `[T, H, D]` (requests concatenated; request `b` owns rows
    `qo_indptr[b]:qo_indptr[b+1]`) over each request's cached prefix (pool slots via `req_to_token`) and,
    causally, its new `k`/`v` `[T, KVH, D]`. `max_extend` (a host int, >= every extend length) sizes the grid.
    Writes and returns `out` `[T, H, D]`.
    """
    num_tokens, num_heads, head_dim = q.shape
    group = num_heads // k.shape[1]
    batch = req_rows.shape[0]
    assert q.stride(2) == 1 and k.stride(2) == 1 and v.stride(2) == 1 and out.stride(2) == 1
    assert k_buf.stride(2) == 1 and req_to_token.stride(1) == 1 and qo_indptr.shape[0] == batch + 1
    if num_tokens == 0 or batch == 0:
        return out
    precision = "ieee" if q.dtype == torch.float32 else "tf32"
    grid = (batch, num_heads, triton.cdiv(max_extend, block_m))
    _extend_kernel[grid](
        q, k, v, out, k_buf, v_buf, req_to_token, req_rows, prefix_lens, qo_indptr,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), out.stride(0), out.stride(1),
        k_buf.stride(0), k_buf.stride(1), req_to_token.stride(0), sm_scale * 1.4426950408889634,
        GROUP=group, HEAD_DIM=head_dim, BLOCK_M=block_m, BLOCK_N=block_n,
        BLOCK_D=triton.next_power_of_2(head_dim), DOT_PRECISION=precision,
        num_warps=num_warps, num_stages=num_stages,
    )
    return out
