"""One latent tile of multi-head latent attention's online softmax, shared by the decode and extend kernels
(`tierlm.kernels.mla_decode`, `tierlm.kernels.mla_extend`): every row (a head, or a token x head) scores the
tile's latents as keys (`q_c · c + q_r · k_r`) and takes their first `LORA` entries as values."""
from __future__ import annotations

import triton
import triton.language as tl

# The tile's masks (constexpr: kernels pass them and the tile compares them at compile time): none, keys from
# `end` on, and also keys past each row's position.
WHOLE, BOUNDED, CAUSAL = tl.constexpr(0), tl.constexpr(1), tl.constexpr(2)


@triton.jit
def latent_tile(q_c, q_r, latent_buf, slot_row, n0, end, qpos, m_i, l_i, acc, stride_buf, sm_scale_log2,
                LORA: tl.constexpr, ROPE: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr,
                BLOCK_R: tl.constexpr, DOT_PRECISION: tl.constexpr, MASK: tl.constexpr):
    """The latents of slots `slot_row[n0 : n0 + BLOCK_N]` into the online softmax `(m_i, l_i, acc)` of the rows
    `q_c` / `q_r`; returns it updated. `MASK`: `WHOLE` (every key seen; only padded widths masked), `BOUNDED`
    (keys from `end` on masked) or `CAUSAL` (also keys past each row's position `qpos`, unused otherwise)."""
    offs_n = n0 + tl.arange(0, BLOCK_N)
    offs_c = tl.arange(0, BLOCK_C)
    offs_r = tl.arange(0, BLOCK_R)
    mask_n = offs_n < end
    if MASK != WHOLE:
        slots = tl.load(slot_row + offs_n, mask=mask_n, other=0).to(tl.int64)
    else:
        slots = tl.load(slot_row + offs_n).to(tl.int64)
    lat = latent_buf + slots[:, None] * stride_buf
    if MASK != WHOLE or LORA != BLOCK_C:
        c = tl.load(lat + offs_c[None, :], mask=mask_n[:, None] & (offs_c < LORA)[None, :], other=0.0)
    else:
        c = tl.load(lat + offs_c[None, :])
    if MASK != WHOLE or ROPE != BLOCK_R:
        k_r = tl.load(lat + LORA + offs_r[None, :], mask=mask_n[:, None] & (offs_r < ROPE)[None, :], other=0.0)
    else:
        k_r = tl.load(lat + LORA + offs_r[None, :])
    c = c.to(q_c.dtype)
    k_r = k_r.to(q_r.dtype)
    qk = tl.dot(q_c, tl.trans(c), input_precision=DOT_PRECISION)
    qk += tl.dot(q_r, tl.trans(k_r), input_precision=DOT_PRECISION)
    qk = qk * sm_scale_log2
    if MASK == CAUSAL:
        qk = tl.where((offs_n[None, :] <= qpos[:, None]) & mask_n[None, :], qk, float("-inf"))
    elif MASK == BOUNDED:
        qk = tl.where(mask_n[None, :], qk, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(qk, axis=1))
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(qk - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, axis=1)
    acc = acc * alpha[:, None] + tl.dot(p.to(c.dtype), c, input_precision=DOT_PRECISION)  # values = c
    return m_new, l_i, acc
