"""Building blocks of the extend attention kernel: which work a program owns, and one online-softmax step.

Kept apart from the kernel so each piece reads on its own; everything here is `@triton.jit` and inlined.
"""
from __future__ import annotations

import triton
import triton.language as tl

# Launch orders (the kernel's ORDER): how the 1-D program id maps to (request, head group, q-block).
#   request:     request fastest, then head group, then q-blocks first to last (the original 3-D grid's order).
#   heavy_first: head group fastest, then request, then q-blocks from each request's LAST block backwards, so
#                the longest causal rows start first and the end of the grid holds only short programs.
#   kv_local:    q-blocks fastest (last first), then request, then head group: programs running together
#                read the same request's K/V of one KV head (smaller L2 working set, longer tail).
#   packed:      heavy_first's order without its idle programs: only the q-blocks that exist are numbered, so
#                the grid follows the pass's tokens, not (requests x longest request); for captured passes,
#                whose grid must hold any mix of up to `batch` requests in a fixed number of rows. Programs read
#                their tile's work from the pass's table (packed_tiles.py).
ORDERS = {"request": 0, "heavy_first": 1, "kv_local": 2, "packed": 3}


@triton.jit
def program_work(pid, batch, num_groups, num_blocks, ORDER: tl.constexpr):
    """(request, head group, q-block rank) of program `pid`; the rank counts from the block the order starts at."""
    if ORDER == 0:
        b = pid % batch
        g = (pid // batch) % num_groups
        rank = pid // (batch * num_groups)
    elif ORDER == 1:
        g = pid % num_groups
        b = (pid // num_groups) % batch
        rank = pid // (num_groups * batch)
    else:
        rank = pid % num_blocks
        b = (pid // num_blocks) % batch
        g = pid // (num_blocks * batch)
    return b, g, rank


@triton.jit
def softmax_step(q, k, v, acc, m_i, l_i, mask, qk_scale,
                 MASKED: tl.constexpr, PRESCALED: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """One key tile into the running softmax. `mask` (rows x keys) is read only when MASKED.

    Scores live in log2 space: `qk_scale` is sm_scale * log2(e) (> 0, so the row max commutes with it and
    scale-and-shift is one FMA), or PRESCALED says q already carries it.
    """
    qk = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)
    if MASKED:
        qk = tl.where(mask, qk, float("-inf"))
    if PRESCALED:
        m_new = tl.maximum(m_i, tl.max(qk, axis=1))
        p = tl.exp2(qk - m_new[:, None])
    else:
        m_new = tl.maximum(m_i, tl.max(qk, axis=1) * qk_scale)
        p = tl.exp2(qk * qk_scale - m_new[:, None])
    alpha = tl.exp2(m_i - m_new)  # m_i starts finite, so a fully masked row gives 1 here, never NaN
    l_i = l_i * alpha + tl.sum(p, axis=1)
    acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=DOT_PRECISION)
    return acc, m_new, l_i


@triton.jit
def load_rows(base, row_off, offs_d, row_mask, HEAD_DIM: tl.constexpr, EVEN_D: tl.constexpr,
              MASK_ROWS: tl.constexpr):
    """`base[row_off[i] + d]` as a [rows, BLOCK_D] tile; masked rows (MASK_ROWS) and padded columns read 0."""
    ptrs = base + row_off[:, None] + offs_d[None, :]
    if MASK_ROWS:
        if EVEN_D:
            return tl.load(ptrs, mask=row_mask[:, None], other=0.0)
        return tl.load(ptrs, mask=row_mask[:, None] & (offs_d < HEAD_DIM)[None, :], other=0.0)
    if EVEN_D:
        return tl.load(ptrs)
    return tl.load(ptrs, mask=(offs_d < HEAD_DIM)[None, :], other=0.0)
