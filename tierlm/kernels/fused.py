"""Fused elementwise Triton kernels of the decoder layer: RMSNorm (+ residual add) and SiLU·mul.

Each replaces two or three torch kernels (and their round trips through device memory) with one pass, and
rounds intermediates exactly where the torch reference does, so bf16/fp16 outputs match it closely.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

from tierlm.kernels.launch import cdiv, next_power_of_2
from tierlm.kernels.pdl import launch_kwargs
from tierlm.kernels.rope_tile import norm_rope_halves


@triton.jit
def _rmsnorm_kernel(x_ptr, res_ptr, w_ptr, out_ptr, res_out_ptr, n_cols, stride_x, stride_r, stride_o, eps,
                    HAS_RES: tl.constexpr, BLOCK: tl.constexpr, PDL: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    w = tl.load(w_ptr + cols, mask=mask, other=0.0)
    if PDL:  # the weight before the wait, everything else after (`tierlm.kernels.pdl`)
        gdc_launch_dependents()
        gdc_wait()
    x = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0)
    if HAS_RES:
        r = tl.load(res_ptr + row * stride_r + cols, mask=mask, other=0.0)
        x = (x.to(tl.float32) + r.to(tl.float32)).to(x.dtype)  # the residual sum is rounded like torch's add
        tl.store(res_out_ptr + row * stride_o + cols, x, mask=mask)
    x32 = x.to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x32 * x32, axis=0) / n_cols + eps)
    y = (x32 * rstd).to(x.dtype)
    tl.store(out_ptr + row * stride_o + cols, (w.to(tl.float32) * y.to(tl.float32)).to(x.dtype), mask=mask)


def rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float,
            residual: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """RMSNorm of the rows of `x` (after adding `residual`); returns (normed, new residual or None)."""
    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    n_rows, n_cols = x2.shape
    out = torch.empty_like(x2)
    res_out = torch.empty_like(x2) if residual is not None else out
    r2 = residual.reshape(-1, n_cols) if residual is not None else x2
    if n_rows:
        _rmsnorm_kernel[(n_rows,)](x2, r2, weight, out, res_out, n_cols, x2.stride(0), r2.stride(0), out.stride(0),
                                   eps, HAS_RES=residual is not None, BLOCK=next_power_of_2(n_cols),
                                   num_warps=4 if n_cols <= 2048 else 8, **launch_kwargs(x.device))
    return out.view(shape), (res_out.view(shape) if residual is not None else None)


@triton.jit
def silu_mul_rounded(gate, up):
    """`silu(gate) * up` of two tiles of one dtype, rounded to it after the SiLU and after the product as the
    torch layers round: every kernel that computes it (alone, as a GEMV's prologue) calls this one, so they agree
    bit for bit."""
    g = gate.to(tl.float32)
    act = (g / (1.0 + tl.exp(-g))).to(gate.dtype)
    return (act.to(tl.float32) * up.to(tl.float32)).to(gate.dtype)


@triton.jit
def _silu_mul_kernel(x_ptr, out_ptr, n_cols, stride_x, stride_o, BLOCK: tl.constexpr, PDL: tl.constexpr):
    if PDL:  # everything it reads comes from its predecessor: it only lets its successor start early
        gdc_launch_dependents()
        gdc_wait()
    row = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < n_cols
    g = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0)
    u = tl.load(x_ptr + row * stride_x + n_cols + cols, mask=mask, other=0.0)
    tl.store(out_ptr + row * stride_o + cols, silu_mul_rounded(g, u), mask=mask)


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """`silu(gate) * up` for `gate_up = [gate | up]` along the last dimension."""
    x2 = gate_up.reshape(-1, gate_up.shape[-1])
    n_rows, n_cols = x2.shape[0], x2.shape[1] // 2
    out = torch.empty(n_rows, n_cols, dtype=gate_up.dtype, device=gate_up.device)
    block = 1024
    if n_rows:
        _silu_mul_kernel[(n_rows, cdiv(n_cols, block))](x2, out, n_cols, x2.stride(0), out.stride(0),
                                                        BLOCK=block, num_warps=4, **launch_kwargs(gate_up.device))
    return out.view(*gate_up.shape[:-1], n_cols)


@triton.jit(do_not_specialize=["n_rows"])  # the pass's token count: no compile when its parity first changes
def _qk_norm_rope_kernel(qkv_ptr, pos_ptr, cos_ptr, sin_ptr, qw_ptr, kw_ptr, q_out, k_out, stride_t, stride_cos,
                         n_rows, num_q_heads, num_kv_heads, eps, HEAD_DIM: tl.constexpr, HALF: tl.constexpr,
                         NORM: tl.constexpr, ROWS: tl.constexpr, PDL: tl.constexpr):
    # One program per ROWS rows of the flattened (token, head) list, a token's query heads before its key
    # heads; rows past n_rows are masked out everywhere.
    r = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    live = r < n_rows
    heads = num_q_heads + num_kv_heads
    tok = (r // heads).to(tl.int64)
    head = r % heads
    is_q = head < num_q_heads
    offs = tl.arange(0, HALF)
    live2 = live[:, None]
    dtype = qkv_ptr.dtype.element_ty
    # positions are uploaded before the step and the tables and weights never change: read before the wait
    pos = tl.load(pos_ptr + tok, mask=live, other=0)
    trig = pos[:, None] * stride_cos + offs[None, :]
    c = tl.load(cos_ptr + trig, mask=live2, other=0.0).to(dtype).to(tl.float32)
    s = tl.load(sin_ptr + trig, mask=live2, other=0.0).to(dtype).to(tl.float32)
    w1 = c
    w2 = c
    if NORM:
        is_q2 = is_q[:, None]
        w1 = tl.where(is_q2, tl.load(qw_ptr + offs)[None, :], tl.load(kw_ptr + offs)[None, :]).to(tl.float32)
        w2 = tl.where(is_q2, tl.load(qw_ptr + HALF + offs)[None, :],
                      tl.load(kw_ptr + HALF + offs)[None, :]).to(tl.float32)
    if PDL:
        gdc_launch_dependents()
        gdc_wait()
    src = qkv_ptr + tok[:, None] * stride_t + head[:, None] * HEAD_DIM + offs[None, :]
    x1 = tl.load(src, mask=live2, other=0.0).to(tl.float32)
    x2 = tl.load(src + HALF, mask=live2, other=0.0).to(tl.float32)
    o1, o2 = norm_rope_halves(x1, x2, c, s, w1, w2, eps, HEAD_DIM, NORM, dtype)  # per-head norm (Qwen3), rotary
    q_dst = q_out + (tok * num_q_heads + head)[:, None] * HEAD_DIM + offs[None, :]
    k_dst = k_out + (tok * num_kv_heads + head - num_q_heads)[:, None] * HEAD_DIM + offs[None, :]
    to_q = live2 & is_q[:, None]
    to_k = live2 & (head >= num_q_heads)[:, None]
    tl.store(q_dst, o1, mask=to_q)
    tl.store(q_dst + HALF, o2, mask=to_q)
    tl.store(k_dst, o1, mask=to_k)
    tl.store(k_dst + HALF, o2, mask=to_k)


def qk_rope_rows(n_rows: int) -> int:
    """(token, head) rows per program of `qk_norm_rope`: small tiles while they still leave programs for every
    SM several times over (decode batches), larger ones for prefill passes."""
    return 16 if n_rows < 32768 else 64


def qk_norm_rope(qkv: torch.Tensor, positions: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                 num_heads: int, num_kv_heads: int, head_dim: int, q_norm_w: Optional[torch.Tensor] = None,
                 k_norm_w: Optional[torch.Tensor] = None, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary embedding (and optional per-head RMSNorm first) of the q and k parts of a fused QKV output.

    `qkv` is `[T, (H + 2 * KVH) * D]`; returns contiguous q `[T, H, D]` and k `[T, KVH, D]` in one launch.
    `cos`/`sin` are the `[max_pos, D]` float32 tables of `RotaryEmbedding` (both halves equal).
    """
    T = qkv.shape[0]
    q = torch.empty(T, num_heads, head_dim, dtype=qkv.dtype, device=qkv.device)
    k = torch.empty(T, num_kv_heads, head_dim, dtype=qkv.dtype, device=qkv.device)
    if T:
        norm = q_norm_w is not None
        n_rows = T * (num_heads + num_kv_heads)
        rows = qk_rope_rows(n_rows)
        _qk_norm_rope_kernel[(cdiv(n_rows, rows),)](
            qkv, positions, cos, sin, q_norm_w if norm else qkv, k_norm_w if norm else qkv, q, k, qkv.stride(0),
            cos.stride(0), n_rows, num_heads, num_kv_heads, eps, HEAD_DIM=head_dim, HALF=head_dim // 2, NORM=norm,
            ROWS=rows, num_warps=4, **launch_kwargs(qkv.device))
    return q, k
