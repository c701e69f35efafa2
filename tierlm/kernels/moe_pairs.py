"""Mixture-of-experts feed-forward for decode-sized batches, one (token, expert) pair at a time.

With a few tokens each selected expert sees one or two rows. The grouped kernels of `fused_moe` pad every
expert's rows to a tensor-core tile, need the pairs sorted by expert first (a dozen small device ops per
call), and at one token their few row blocks leave most SMs idle. Here every (pair, column block) is one
program that streams its expert's weight rows as the small-batch GEMV does (`tierlm.kernels.gemv`), summing
on the CUDA cores, so nothing is sorted and a one-token call spreads over hundreds of programs. Each pair
reads its expert's rows itself: an expert chosen by several tokens of the batch is read once per token (a
repeat may come from L2), so this pays only for a handful of tokens; the tuner (`fused_moe_tune`) decides per
token-count bucket.

Rounding as `fused_moe`: gate and up rounded to the dtype, SiLU rounded, their product rounded; the down
projection rounded, times the routing weight, rounded (a row per pair; `fused_moe` sums a token's rows).
float32 inputs are multiplied in float32 (no TF32).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from tierlm.kernels.launch import cdiv


@triton.jit
def _pair_gate_up_kernel(x_ptr, w_ptr, h_ptr, ids_ptr, hidden, inter, stride_x, stride_we, stride_wn, stride_h,
                         TOP_K: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid = tl.program_id(0)
    col_blocks = tl.cdiv(inter, BLOCK_N)
    pair = pid // col_blocks
    expert = tl.load(ids_ptr + pair).to(tl.int64)
    token = (pair // TOP_K).to(tl.int64)
    cols = (pid % col_blocks) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < inter
    ks = tl.arange(0, BLOCK_K)
    g_rows = w_ptr + expert * stride_we + cols[:, None].to(tl.int64) * stride_wn
    u_rows = g_rows + inter * stride_wn  # an expert's up rows follow its gate rows
    x_row = x_ptr + token * stride_x
    # weight tiles one iteration ahead, lanes summing apart until the end: no iteration waits on a reduction
    mask = col_ok[:, None] & (ks < hidden)[None, :]
    g_next = tl.load(g_rows + ks[None, :], mask=mask, other=0.0)
    u_next = tl.load(u_rows + ks[None, :], mask=mask, other=0.0)
    acc_g = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    acc_u = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    for k0 in range(0, hidden, BLOCK_K):
        kk = k0 + ks
        g, u = g_next, u_next
        mask = col_ok[:, None] & (kk + BLOCK_K < hidden)[None, :]
        g_next = tl.load(g_rows + (kk + BLOCK_K)[None, :], mask=mask, other=0.0)
        u_next = tl.load(u_rows + (kk + BLOCK_K)[None, :], mask=mask, other=0.0)
        x = tl.load(x_row + kk, mask=kk < hidden, other=0.0).to(tl.float32)[None, :]
        acc_g += g.to(tl.float32) * x
        acc_u += u.to(tl.float32) * x
    dtype = h_ptr.dtype.element_ty
    gate = tl.sum(acc_g, axis=1).to(dtype).to(tl.float32)
    act = (gate / (1.0 + tl.exp(-gate))).to(dtype).to(tl.float32)
    h = (act * tl.sum(acc_u, axis=1).to(dtype).to(tl.float32)).to(dtype)
    tl.store(h_ptr + pair.to(tl.int64) * stride_h + cols, h, mask=col_ok)


@triton.jit
def _pair_down_kernel(h_ptr, w_ptr, out_ptr, weights_ptr, ids_ptr, hidden, inter, stride_h, stride_we, stride_wn,
                      stride_o, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid = tl.program_id(0)
    col_blocks = tl.cdiv(hidden, BLOCK_N)
    pair = pid // col_blocks
    expert = tl.load(ids_ptr + pair).to(tl.int64)
    cols = (pid % col_blocks) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < hidden
    ks = tl.arange(0, BLOCK_K)
    w_rows = w_ptr + expert * stride_we + cols[:, None].to(tl.int64) * stride_wn
    h_row = h_ptr + pair.to(tl.int64) * stride_h
    w_next = tl.load(w_rows + ks[None, :], mask=col_ok[:, None] & (ks < inter)[None, :], other=0.0)
    acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    for k0 in range(0, inter, BLOCK_K):
        kk = k0 + ks
        w = w_next
        w_next = tl.load(w_rows + (kk + BLOCK_K)[None, :], mask=col_ok[:, None] & (kk + BLOCK_K < inter)[None, :],
                         other=0.0)
        hv = tl.load(h_row + kk, mask=kk < inter, other=0.0).to(tl.float32)[None, :]
        acc += w.to(tl.float32) * hv
    dtype = out_ptr.dtype.element_ty
    weight = tl.load(weights_ptr + pair).to(tl.float32)
    y = (tl.sum(acc, axis=1).to(dtype).to(tl.float32) * weight).to(dtype)
    tl.store(out_ptr + pair.to(tl.int64) * stride_o + cols, y, mask=col_ok)


def moe_by_pairs(x: torch.Tensor, gate_up: torch.Tensor, down: torch.Tensor, flat_weights: torch.Tensor,
                 ids: torch.Tensor, block_n: int, block_k: int, num_warps: int) -> torch.Tensor:
    """Each (token, expert) pair's weighted SwiGLU output `[tokens * top_k, hidden]` (a token's k rows
    together), one program per (pair, column block). `x`, `gate_up`, `down` contiguous; `flat_weights`
    `[tokens * top_k]`, `ids` `[tokens, top_k]`. Reads nothing on the host."""
    tokens, hidden = x.shape
    top_k = ids.shape[1]
    inter = down.shape[2]
    pairs = tokens * top_k
    flat_ids = ids.reshape(-1).contiguous()
    h = torch.empty(pairs, inter, dtype=x.dtype, device=x.device)
    _pair_gate_up_kernel[(pairs * cdiv(inter, block_n),)](
        x, gate_up, h, flat_ids, hidden, inter, x.stride(0), gate_up.stride(0), gate_up.stride(1), h.stride(0),
        TOP_K=top_k, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=num_warps)
    per_pair = torch.empty(pairs, hidden, dtype=x.dtype, device=x.device)
    _pair_down_kernel[(pairs * cdiv(hidden, block_n),)](
        h, down, per_pair, flat_weights, flat_ids, hidden, inter, h.stride(0), down.stride(0), down.stride(1),
        per_pair.stride(0), BLOCK_N=block_n, BLOCK_K=block_k, num_warps=num_warps)
    return per_pair
