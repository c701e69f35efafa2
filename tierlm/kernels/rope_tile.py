"""Per-head RMSNorm (Qwen3's q/k norm) and rotary embedding of a tile of head rows, as Triton helpers: one
definition of the arithmetic for the standalone pass (`fused.qk_norm_rope`) and for the decode attention
kernel that applies it to the step's own q and k as it loads them (`decode_attention(rope=...)`).

Rows are split in halves (`x1` = first `HALF` values, `x2` = the rest): rotary pairs value `i` with `i + HALF`
(the "rotate half" layout of Llama/Qwen checkpoints). Rounding follows the torch layers: the normalised row
is rounded to the input dtype before and after the norm weight, the rotated halves once at the end.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import triton
import triton.language as tl

from tierlm.kernels.launch import next_power_of_2


@dataclass(frozen=True)
class QKRope:
    """What the q/k norm and rotary of one layer need: per-token positions `[T]`, the `[max_pos, D]` float32
    cos/sin tables of `RotaryEmbedding` (both halves equal), the norm weights `[D]` (None: no q/k norm)."""

    positions: torch.Tensor
    cos: torch.Tensor
    sin: torch.Tensor
    q_norm_w: Optional[torch.Tensor] = None
    k_norm_w: Optional[torch.Tensor] = None
    eps: float = 1e-6


@triton.jit
def norm_rope_halves(x1, x2, c, s, w1, w2, eps, HEAD_DIM: tl.constexpr, NORM: tl.constexpr, DTYPE: tl.constexpr):
    """Rotated halves (in DTYPE) of rows given as float32 halves `x1`, `x2` `[R, HALF]`, after a per-row
    RMSNorm with weight halves `w1`, `w2` when NORM; `c`, `s` are float32 cos/sin halves (rounded to DTYPE
    first, as the torch layer multiplies in DTYPE) broadcastable to `[R, HALF]`."""
    if NORM:
        rstd = 1.0 / tl.sqrt((tl.sum(x1 * x1, axis=1) + tl.sum(x2 * x2, axis=1)) / HEAD_DIM + eps)
        x1 = (w1 * (x1 * rstd[:, None]).to(DTYPE).to(tl.float32)).to(DTYPE).to(tl.float32)
        x2 = (w2 * (x2 * rstd[:, None]).to(DTYPE).to(tl.float32)).to(DTYPE).to(tl.float32)
    return (x1 * c - x2 * s).to(DTYPE), (x2 * c + x1 * s).to(DTYPE)


@triton.jit
def rope_tables(pos, cos_ptr, sin_ptr, stride_cos, HALF: tl.constexpr, DTYPE: tl.constexpr):
    """The cos/sin halves `[1, HALF]` at position `pos`, rounded to DTYPE and returned as float32. The tables
    never change during a step: a PDL-launched kernel may read them before its wait."""
    row = pos.to(tl.int64) * stride_cos + tl.arange(0, HALF)
    c = tl.load(cos_ptr + row).to(DTYPE).to(tl.float32)[None, :]
    s = tl.load(sin_ptr + row).to(DTYPE).to(tl.float32)[None, :]
    return c, s


@triton.jit
def weight_halves(w_ptr, HALF: tl.constexpr, NORM: tl.constexpr):
    """A norm weight's halves `[1, HALF]` in float32 (ones without NORM, when `w_ptr` is a placeholder)."""
    offs = tl.arange(0, HALF)
    w1 = tl.full([1, HALF], 1.0, tl.float32)
    w2 = w1
    if NORM:
        w1 = tl.load(w_ptr + offs).to(tl.float32)[None, :]
        w2 = tl.load(w_ptr + HALF + offs).to(tl.float32)[None, :]
    return w1, w2


@triton.jit
def load_rotated(row_ptrs, mask_rows, c, s, w1, w2, eps, HEAD_DIM: tl.constexpr, HALF: tl.constexpr,
                 NORM: tl.constexpr, DTYPE: tl.constexpr):
    """Rows at `row_ptrs` `[R]` (pointers to each row's first value) loaded, normed and rotated: a `[R, HEAD_DIM]`
    tile in DTYPE, halves back in place (so a dot over the head dimension sums in the unfused order)."""
    offs = tl.arange(0, HALF)
    src = row_ptrs[:, None] + offs[None, :]
    x1 = tl.load(src, mask=mask_rows[:, None], other=0.0).to(tl.float32)
    x2 = tl.load(src + HALF, mask=mask_rows[:, None], other=0.0).to(tl.float32)
    o1, o2 = norm_rope_halves(x1, x2, c, s, w1, w2, eps, HEAD_DIM, NORM, DTYPE)
    return tl.reshape(tl.permute(tl.join(o1, o2), (0, 2, 1)), (row_ptrs.shape[0], HEAD_DIM))


def fusable(head_dim: int) -> bool:
    """Whether a head of `head_dim` values can be rotated inside another kernel's tile (halves of a power of
    two, at least 16 values each)."""
    return head_dim >= 32 and next_power_of_2(head_dim) == head_dim
