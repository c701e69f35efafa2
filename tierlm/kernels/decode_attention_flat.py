"""Decode attention for large batches: each program streams several requests' K/V in one flat loop.

With one split per request (large batches), `decode_attention`'s stage 1 gives every program one request and
one KV group: at short contexts a program reads a few tiles and exits, and the next program on that SM starts
from a cold pipeline (the request's length, its table row, its first slots, then its first K/V tiles: a chain
of dependent memory round trips) while the SM reads nothing. Here a program takes `ITEMS` consecutive
requests of one KV group and walks all their tiles in a single loop, so the software pipeline and the slot
prefetch run on across request boundaries: when a tile is a request's first, the running softmax restarts and
the request's queries are taken; when it is its last, the output is written (and the step's own K/V handled,
as in `decode_attention`). Same grid for every batch of a given size, so CUDA graphs stay valid.
"""
from __future__ import annotations

import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait


@triton.jit
def _pick(vec, offs, i):
    """Element `i` of a small per-program vector (a masked sum: Triton has no dynamic indexing)."""
    return tl.sum(tl.where(offs == i, vec, 0), axis=0)


@triton.jit
def decode_flat_kernel(
    q_ptr, k_buf, v_buf, req_to_token, req_rows, seq_lens, k_new, v_new, out_loc, out_ptr, batch,
    stride_qb, stride_qh, stride_buf_s, stride_buf_h, stride_r2t, stride_kn, stride_knh, stride_vn, stride_vnh,
    stride_ob, stride_oh, sm_scale_log2,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, ITEMS: tl.constexpr, BLOCK_H: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, HEAD_BLOCKS: tl.constexpr, DOT_PRECISION: tl.constexpr,
    STORE_NEW: tl.constexpr, PDL: tl.constexpr,
):
    if PDL:
        gdc_launch_dependents()
    b0 = tl.program_id(0) * ITEMS
    hb = tl.program_id(1)
    kv_head = hb // HEAD_BLOCKS
    offs_h = (hb % HEAD_BLOCKS) * BLOCK_H + tl.arange(0, BLOCK_H)
    mask_h = offs_h < GROUP
    heads = kv_head * GROUP + offs_h
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < HEAD_DIM
    kv_col = kv_head * stride_buf_h + offs_d[None, :]

    # Per item: how many pool tokens it reads (the step's own token comes from `k_new` under STORE_NEW), its
    # tiles (at least one, so that an item with nothing in the pool still writes its output) and where its
    # tiles start in the flat loop. Lengths, rows and the table are written before the step (`kernels.pdl`).
    offs_r = tl.arange(0, ITEMS)
    valid_r = b0 + offs_r < batch
    lens_r = tl.load(seq_lens + b0 + offs_r, mask=valid_r, other=0)
    rows_r = tl.load(req_rows + b0 + offs_r, mask=valid_r, other=0).to(tl.int64)
    pool_r = lens_r - 1 if STORE_NEW else lens_r
    tiles_r = tl.where(valid_r, tl.maximum(tl.cdiv(pool_r, BLOCK_N), 1), 0)
    ends_r = tl.cumsum(tiles_r, axis=0)
    starts_r = ends_r - tiles_r
    total = tl.sum(tiles_r, axis=0)

    # The flat loop starts at item 0's first tile (a program's first item is always a request); the slots
    # of tile 0 are read before the wait, those of tile t + 1 while tile t is processed.
    item = b0 * 0
    first_n = tl.arange(0, BLOCK_N)
    next_slots = tl.load(req_to_token + _pick(rows_r, offs_r, 0) * stride_r2t + first_n,
                         mask=first_n < _pick(pool_r, offs_r, 0), other=0).to(tl.int64)
    if PDL:
        gdc_wait()

    m_i = tl.full([BLOCK_H], -1.0e30, dtype=tl.float32)
    l_i = tl.zeros([BLOCK_H], dtype=tl.float32)
    acc = tl.zeros([BLOCK_H, BLOCK_D], dtype=tl.float32)
    q = tl.zeros([BLOCK_H, BLOCK_D], dtype=q_ptr.dtype.element_ty)
    for t in range(0, total):
        b = b0 + item
        start_t = _pick(starts_r, offs_r, item)
        n0 = (t - start_t) * BLOCK_N
        is_first = t == start_t
        is_last = t == _pick(ends_r, offs_r, item) - 1
        # the same two facts as vectors: masks must not be scalar bools (Triton's interpreter rejects them)
        first_d = (offs_d * 0 + t) == start_t
        last_d = (offs_d * 0 + t) == _pick(ends_r, offs_r, item) - 1
        # a new item: restart the running softmax and take its queries
        m_i = tl.where(is_first, -1.0e30, m_i)
        l_i = tl.where(is_first, 0.0, l_i)
        acc = tl.where(is_first, 0.0, acc)
        q_mask = mask_h[:, None] & (mask_d & first_d)[None, :]
        q_new = tl.load(q_ptr + b.to(tl.int64) * stride_qb + heads[:, None] * stride_qh + offs_d[None, :],
                        mask=q_mask, other=0.0)
        q = tl.where(is_first, q_new, q)

        offs_n = n0 + tl.arange(0, BLOCK_N)
        mask_n = offs_n < _pick(pool_r, offs_r, item)
        slots = next_slots
        # the next tile (in this item or the first of the next) and its slots, ahead of this tile's math
        next_item = item + is_last.to(tl.int32)
        next_n0 = tl.where(is_last, 0, n0 + BLOCK_N)
        next_pool = _pick(pool_r, offs_r, next_item)
        next_row = _pick(rows_r, offs_r, next_item)
        ahead = next_n0 + tl.arange(0, BLOCK_N)
        next_slots = tl.load(req_to_token + next_row * stride_r2t + ahead,
                             mask=(ahead < next_pool) & ((ahead * 0 + t + 1) < total), other=0).to(tl.int64)

        kv_off = slots[:, None] * stride_buf_s + kv_col
        kv_mask = mask_n[:, None] & mask_d[None, :]
        k = tl.load(k_buf + kv_off, mask=kv_mask, other=0.0).to(q.dtype)
        qk = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)
        qk = tl.where(mask_n[None, :], qk * sm_scale_log2, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, axis=1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(qk - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(v_buf + kv_off, mask=kv_mask, other=0.0).to(q.dtype)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
        m_i = m_new

        if STORE_NEW:
            # the item's own token, on its last tile: attended from the projections and stored in the pool
            b64 = b.to(tl.int64)
            kn = tl.load(k_new + b64 * stride_kn + kv_head * stride_knh + offs_d, mask=mask_d & last_d, other=0.0)
            vn = tl.load(v_new + b64 * stride_vn + kv_head * stride_vnh + offs_d, mask=mask_d & last_d, other=0.0)
            kn = kn.to(k_buf.dtype.element_ty)  # rounded as the pool holds it
            vn = vn.to(v_buf.dtype.element_ty)
            dst = tl.load(out_loc + b).to(tl.int64) * stride_buf_s + kv_head * stride_buf_h
            owner = mask_d & last_d & ((offs_d * 0 + hb) % HEAD_BLOCKS == 0)  # one program per KV head writes it
            tl.store(k_buf + dst + offs_d, kn, mask=owner)
            tl.store(v_buf + dst + offs_d, vn, mask=owner)
            qk_n = tl.sum(q.to(tl.float32) * kn.to(q.dtype).to(tl.float32)[None, :], axis=1) * sm_scale_log2
            m_n = tl.where(is_last, tl.maximum(m_i, qk_n), m_i)
            alpha_n = tl.exp2(m_i - m_n)
            p_n = tl.where(is_last, tl.exp2(qk_n - m_n), 0.0)
            l_i = l_i * alpha_n + p_n
            acc = acc * alpha_n[:, None] + p_n[:, None] * vn.to(q.dtype).to(tl.float32)[None, :]
            m_i = m_n

        l_safe = tl.where(l_i > 0, l_i, 1.0)
        dst_o = out_ptr + b.to(tl.int64) * stride_ob + heads[:, None] * stride_oh + offs_d[None, :]
        tl.store(dst_o, (acc / l_safe[:, None]).to(out_ptr.dtype.element_ty),
                 mask=mask_h[:, None] & (mask_d & last_d)[None, :])
        item = next_item


def decode_flat(q, k_buf, v_buf, req_to_token, req_rows, seq_lens, out, sm_scale: float, *, items: int,
                block_n: int, num_warps: int, num_stages: int, new_kv, pdl: dict) -> None:
    """Launch the flat kernel: `items` (a power of two) consecutive requests per program, one split each.
    Arguments as `decode_attention`'s; `new_kv` is `(k, v, out_loc)` or None; `pdl` its launch keywords."""
    batch, num_heads, head_dim = q.shape
    num_kv_heads = k_buf.shape[1]
    group = num_heads // num_kv_heads
    block_h = min(max(16, triton.next_power_of_2(group)), 64)
    head_blocks = triton.cdiv(group, block_h)
    k_new, v_new, out_loc = new_kv if new_kv is not None else (k_buf, v_buf, seq_lens)
    decode_flat_kernel[(triton.cdiv(batch, items), num_kv_heads * head_blocks)](
        q, k_buf, v_buf, req_to_token, req_rows, seq_lens, k_new, v_new, out_loc, out, batch,
        q.stride(0), q.stride(1), k_buf.stride(0), k_buf.stride(1), req_to_token.stride(0),
        k_new.stride(0), k_new.stride(1), v_new.stride(0), v_new.stride(1), out.stride(0), out.stride(1),
        sm_scale * 1.4426950408889634,
        GROUP=group, HEAD_DIM=head_dim, ITEMS=items, BLOCK_H=block_h, BLOCK_N=block_n,
        BLOCK_D=triton.next_power_of_2(head_dim), HEAD_BLOCKS=head_blocks,
        DOT_PRECISION="ieee" if q.dtype.itemsize == 4 else "tf32", STORE_NEW=new_kv is not None,
        num_warps=num_warps, num_stages=num_stages, **pdl,
    )
