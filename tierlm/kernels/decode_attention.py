"""Split-KV decode attention over a token-granular `req_to_token` table, with grouped-query heads.

Stage 1, grid `(kv_head * head_blocks, batch, max_splits)`: each program takes the query heads of one KV
group (so every K/V byte it loads serves the whole group) and one slice of the request's sequence, runs
an online softmax over that slice and writes a normalised partial output plus its log-sum-exp (base 2).
Stage 2 merges the slices by their LSEs. With one slice per request (large batches) stage 1 writes the output
itself and stage 2 is not launched. Merging inside stage 1 instead (the last of a request's slices to finish, by
an arrival counter, as the skinny GEMM's split-K) was built and measured in the engine's decode steps: within 2%
either way by batch size and model, more often slower (each slice's release fence and counter round trip cost
what the second launch did), and 30% slower for one 8K-token request (one program per KV head merges 64 slices);
removed (docs/benchmarks.md, 2026-12-06, twenty-second stop).

The slices are cut by one of two rules: per request (`request_splits`: how many a request gets is computed on the
device from its length, the host only fixes `max_splits` from the batch size) or by tokens across the batch
(`balanced_splits`: a plan written once per step). Neither makes the launch depend on sequence lengths, so a CUDA
graph captured per batch size stays valid.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

from tierlm.kernels.balanced_splits import BalancedPlan, load_item, merge as balanced_merge, store_item
from tierlm.kernels.l2_prefetch import l2_prefetch_lines, prefetch_l2
from tierlm.kernels.launch import cdiv, next_power_of_2
from tierlm.kernels.pdl import launch_kwargs
from tierlm.kernels.pool_dtype import compute_dtype, to_pool, widen_q
from tierlm.kernels.request_splits import merge as request_merge, split_range
from tierlm.kernels.rope_tile import QKRope, fusable, load_rotated, rope_tables, weight_halves


@triton.jit
def _decode_stage1(
    q_ptr, k_buf, v_buf, req_to_token, req_rows, seq_lens, order, mid_o, mid_lse, k_new, v_new, out_loc, out_ptr,
    pos_ptr, cos_ptr, sin_ptr, qw_ptr, kw_ptr,
    stride_qb, stride_qh, stride_buf_s, stride_buf_h, stride_r2t, stride_kn, stride_knh, stride_vn, stride_vnh,
    stride_ob, stride_oh, stride_cos, sm_scale_log2, min_chunk, eps, plan_items,
    BALANCED: tl.constexpr, GROUP: tl.constexpr, NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr,
    MAX_SPLITS: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    HEAD_BLOCKS: tl.constexpr, USE_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr, STORE_NEW: tl.constexpr,
    PDL: tl.constexpr, DIRECT: tl.constexpr, WIDE: tl.constexpr, HEADS_FIRST: tl.constexpr,
    ORDERED: tl.constexpr, PREFETCH_LINES: tl.constexpr, LINE: tl.constexpr, ROPE: tl.constexpr, NORM: tl.constexpr,
):
    # DIRECT (one split per request): this program's output is final, so it is written in the output dtype
    # and stage 2 is not launched; stage 2 would compute exactly this (weight 1, denominator 1).
    if PDL:
        gdc_launch_dependents()
    if HEADS_FIRST:
        hb = tl.program_id(0)
        b = tl.program_id(1)
    else:
        b = tl.program_id(0)
        hb = tl.program_id(1)
    if ORDERED:  # the step's requests longest first (written before the step, like the lengths)
        b = tl.load(order + b)
    split = tl.program_id(2)
    kv_head = hb // HEAD_BLOCKS
    offs_h = (hb % HEAD_BLOCKS) * BLOCK_H + tl.arange(0, BLOCK_H)  # index inside the group
    mask_h = offs_h < GROUP
    heads = kv_head * GROUP + offs_h
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < HEAD_DIM

    item = b  # BALANCED: the grid's second axis numbers the plan's work items (`kernels.balanced_splits`)
    if BALANCED:
        b, start, end, count = load_item(plan_items, item)
        seq_len = tl.load(seq_lens + b)
    else:
        seq_len = tl.load(seq_lens + b)
        _, start, end = split_range(seq_len, split, min_chunk, MAX_SPLITS, BLOCK_N)
    row = tl.load(req_rows + b).to(tl.int64)
    # the step's rows, lengths and request table are written before its first kernel, and the pool slots
    # read here hold earlier steps' K/V: the first tile's slots are read before the wait (`kernels.pdl`)
    first_n = start + tl.arange(0, BLOCK_N)
    next_slots = tl.load(req_to_token + row * stride_r2t + first_n, mask=first_n < end, other=0).to(tl.int64)
    if PREFETCH_LINES > 0:  # the first tile's K/V lines into L2 during the wait (`kernels.l2_prefetch`);
        # masked rows point at slot 0, and line offsets past the row are clamped to its last element
        in_row = tl.minimum(tl.arange(0, PREFETCH_LINES) * LINE, HEAD_DIM - 1)
        lines = next_slots[:, None] * stride_buf_s + kv_head * stride_buf_h + in_row[None, :]
        prefetch_l2(k_buf + lines)
        prefetch_l2(v_buf + lines)
    if ROPE:  # q and the new k arrive before their norm and rotary, applied here (`kernels.rope_tile`)
        dtype = q_ptr.dtype.element_ty
        cos, sin = rope_tables(tl.load(pos_ptr + b), cos_ptr, sin_ptr, stride_cos, HEAD_DIM // 2, dtype)
        qw1, qw2 = weight_halves(qw_ptr, HEAD_DIM // 2, NORM)
    if PDL:
        gdc_wait()

    q_rows = q_ptr + b.to(tl.int64) * stride_qb + heads * stride_qh
    if ROPE:
        q = load_rotated(q_rows, mask_h, cos, sin, qw1, qw2, eps, HEAD_DIM, HEAD_DIM // 2, NORM, dtype)
    else:
        q = tl.load(q_rows[:, None] + offs_d[None, :], mask=mask_h[:, None] & mask_d[None, :], other=0.0)
    q = widen_q(q, WIDE)  # K/V below are widened to q's type
    # Finite initial max: a fully masked tile then gives p = 0 and alpha = 1, never NaN.
    m_i = tl.full([BLOCK_H], -1.0e30, dtype=tl.float32)
    l_i = tl.zeros([BLOCK_H], dtype=tl.float32)
    acc = tl.zeros([BLOCK_H, BLOCK_D], dtype=tl.float32)
    kv_col = kv_head * stride_buf_h + offs_d[None, :]
    # STORE_NEW: the step's own token (position seq_len - 1) is not in the pool yet. The program whose slice
    # holds it takes its K/V from the projections, after the loop, and writes them to the pool for later
    # steps; nothing in this launch reads that slot, so no ordering between programs is needed.
    owns_new = start < 0  # False
    loop_end = end
    if STORE_NEW:
        owns_new = (start < end) & (end == seq_len)
        loop_end = tl.where(owns_new, end - 1, end)
    for n0 in range(start, loop_end, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        mask_n = offs_n < loop_end
        slots = next_slots
        ahead = offs_n + BLOCK_N
        next_slots = tl.load(req_to_token + row * stride_r2t + ahead, mask=ahead < loop_end, other=0).to(tl.int64)
        kv_off = slots[:, None] * stride_buf_s + kv_col
        kv_mask = mask_n[:, None] & mask_d[None, :]
        k = tl.load(k_buf + kv_off, mask=kv_mask, other=0.0).to(q.dtype)
        if USE_DOT:
            qk = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)
        else:
            qk = tl.sum(q[:, None, :].to(tl.float32) * k[None, :, :].to(tl.float32), axis=2)
        qk = tl.where(mask_n[None, :], qk * sm_scale_log2, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, axis=1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(qk - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(v_buf + kv_off, mask=kv_mask, other=0.0).to(q.dtype)
        if USE_DOT:
            pv = tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
        else:
            pv = tl.sum(p[:, :, None] * v[None, :, :].to(tl.float32), axis=1)
        acc = acc * alpha[:, None] + pv
        m_i = m_new
    if STORE_NEW:
        if owns_new:
            b64 = b.to(tl.int64)
            k_row = k_new + b64 * stride_kn + kv_head * stride_knh
            if ROPE:
                kw1, kw2 = weight_halves(kw_ptr, HEAD_DIM // 2, NORM)
                kn = tl.reshape(load_rotated(k_row + tl.zeros([1], tl.int64), tl.full([1], 1, tl.int1), cos, sin,
                                             kw1, kw2, eps, HEAD_DIM, HEAD_DIM // 2, NORM, dtype), (HEAD_DIM,))
            else:
                kn = tl.load(k_row + offs_d, mask=mask_d, other=0.0)
            vn = tl.load(v_new + b64 * stride_vn + kv_head * stride_vnh + offs_d, mask=mask_d, other=0.0)
            kn = to_pool(kn, k_buf.dtype.element_ty)  # rounded as the pool holds it
            vn = to_pool(vn, v_buf.dtype.element_ty)
            if hb % HEAD_BLOCKS == 0:  # one program per KV head writes it
                dst = tl.load(out_loc + b).to(tl.int64) * stride_buf_s + kv_head * stride_buf_h + offs_d
                tl.store(k_buf + dst, kn, mask=mask_d)
                tl.store(v_buf + dst, vn, mask=mask_d)
            qk = tl.sum(q.to(tl.float32) * kn.to(q.dtype).to(tl.float32)[None, :], axis=1) * sm_scale_log2
            m_new = tl.maximum(m_i, qk)
            alpha = tl.exp2(m_i - m_new)
            p = tl.exp2(qk - m_new)
            l_i = l_i * alpha + p
            acc = acc * alpha[:, None] + p[:, None] * vn.to(q.dtype).to(tl.float32)[None, :]
            m_i = m_new

    l_safe = tl.where(l_i > 0, l_i, 1.0)
    if DIRECT:
        dst = out_ptr + b.to(tl.int64) * stride_ob + heads[:, None] * stride_oh + offs_d[None, :]
        tl.store(dst, (acc / l_safe[:, None]).to(out_ptr.dtype.element_ty), mask=mask_h[:, None] & mask_d[None, :])
        return
    if BALANCED:
        store_item(acc / l_safe[:, None], m_i + tl.log2(l_safe), out_ptr + b.to(tl.int64) * stride_ob, mid_o, mid_lse,
                   item, count, heads, stride_oh, mask_h, offs_d, mask_d, NUM_HEADS, HEAD_DIM)
        return
    valid = mask_h & ((offs_h * 0 + start) < end)  # per-head vector: scalar bools break the interpreter
    mid = (b.to(tl.int64) * NUM_HEADS + heads) * MAX_SPLITS + split  # [B, H, MAX_SPLITS] row index
    tl.store(mid_o + mid[:, None] * HEAD_DIM + offs_d[None, :], acc / l_safe[:, None],
             mask=valid[:, None] & mask_d[None, :])
    tl.store(mid_lse + mid, m_i + tl.log2(l_safe), mask=valid)


def decode_attention(q: torch.Tensor, k_buf: torch.Tensor, v_buf: torch.Tensor, req_to_token: torch.Tensor,
                     req_rows: torch.Tensor, seq_lens: torch.Tensor, out: torch.Tensor, mid_o: torch.Tensor,
                     mid_lse: torch.Tensor, sm_scale: float, *, min_chunk: int = 128, block_n: int = 128,
                     dot_min_group: int = 1, num_warps: int = 4, num_stages: int = 2, heads_first: bool = True,
                     order: Optional[torch.Tensor] = None,
                     new_kv: Optional[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None,
                     rope: Optional[QKRope] = None, balanced: Optional[BalancedPlan] = None) -> torch.Tensor:
    """One query token per request: `q` `[B, H, D]` attends to slots `req_to_token[req_rows[b], :seq_lens[b]]`.

    `mid_o` `[B, H, S, D]` and `mid_lse` `[B, H, S]` are float32 scratch (contiguous); `S` is the maximum
    number of splits. Writes and returns `out` `[B, H, D]`. Groups of at least `dot_min_group` query heads
    use `tl.dot` (padded to 16 rows); smaller ones a broadcast multiply.

    `heads_first`: stage 1's programs are numbered KV head first, so the programs of one request's heads run
    side by side and read the pool's slot rows (every KV head of a token, adjacent in memory) together;
    otherwise batch first, so one head of every request runs before the next head's.

    `order` (`[B]`, a permutation of the batch, see `longest_first`): stage 1 takes the requests in this order.
    Programs start roughly in the order they are numbered, so with the longest requests first the last
    programs to start are short ones and a batch of mixed lengths does not wait on a long request that
    started late. The result does not depend on it.

    `new_kv = (k, v, out_loc)` (`[B, KVH, D]` twice, `[B]`): the step's own K/V, not yet in the pool. The
    kernel attends to them from there and stores them at `out_loc`, so no separate store launch is needed.

    `rope` (with `new_kv`, for a head dimension `rope_tile.fusable` allows): `q` and the new k are the QKV
    projection's, before the q/k norm and rotary, which stage 1 applies as it loads them (as
    `fused.qk_norm_rope` computes them), so the step needs no pass of its own for them. `q` and `k` may then
    be strided views of the projection's output.

    `balanced` (the step's `balanced_splits.balanced_plan`): the KV is split by tokens across the batch, so a long
    request gets many slices and short ones few; `mid_o` then needs a row per work item (`B * S >= items`, see
    `balanced_splits.scratch_splits`), and `order` does not apply.
    """
    batch, num_heads, head_dim = q.shape
    num_kv_heads = k_buf.shape[1]
    group = num_heads // num_kv_heads
    max_splits = mid_o.shape[2]
    assert mid_o.shape == (batch, num_heads, max_splits, head_dim) and mid_o.is_contiguous()
    if balanced is not None:
        assert order is None and batch * max_splits >= balanced.items.shape[0], "balanced: see the docstring"
    assert mid_lse.shape == (batch, num_heads, max_splits) and mid_lse.is_contiguous()
    assert q.stride(2) == 1 and out.stride(2) == 1 and k_buf.stride(2) == 1 and req_to_token.stride(1) == 1
    if batch == 0:
        return out
    use_dot = group >= dot_min_group
    assert block_n >= 16 or not use_dot, "tl.dot takes KV tiles of 16 tokens or more on the GPU"
    block_h = max(16, next_power_of_2(group)) if use_dot else next_power_of_2(group)
    block_h = min(block_h, 64)
    head_blocks = cdiv(group, block_h)
    precision = "ieee" if q.dtype == torch.float32 else "tf32"
    block_d = next_power_of_2(head_dim)
    log2e = 1.4426950408889634
    k_new, v_new, out_loc = new_kv if new_kv is not None else (k_buf, v_buf, seq_lens)
    if new_kv is not None:
        assert k_new.shape == (batch, num_kv_heads, head_dim) and v_new.shape == k_new.shape
        assert k_new.stride(2) == 1 and v_new.stride(2) == 1 and out_loc.shape == (batch,)
    if rope is not None:
        assert new_kv is not None and fusable(head_dim), "rotary in stage 1 needs new_kv and halves of 2^n"
        norm = rope.q_norm_w is not None
        rope_args = (rope.positions, rope.cos, rope.sin, rope.q_norm_w if norm else q, rope.k_norm_w if norm else q)
        stride_cos, eps = rope.cos.stride(0), rope.eps
    else:
        norm, rope_args, stride_cos, eps = False, (seq_lens, q, q, q, q), 0, 0.0
    pdl = launch_kwargs(q.device)
    lines, line = l2_prefetch_lines(pdl["PDL"], "attention", head_dim, k_buf.element_size())
    programs = num_kv_heads * head_blocks
    rows = batch if balanced is None else balanced.items.shape[0]  # requests, or work items
    heads_first = heads_first and rows <= 65535  # a grid's second dimension holds at most 65,535 programs
    grid = (programs, rows, max_splits if balanced is None else 1)
    grid = grid if heads_first else (rows, programs, grid[2])
    _decode_stage1[grid](
        q, k_buf, v_buf, req_to_token, req_rows, seq_lens, order if order is not None else seq_lens, mid_o,
        mid_lse, k_new, v_new, out_loc, out, *rope_args,
        q.stride(0), q.stride(1), k_buf.stride(0), k_buf.stride(1), req_to_token.stride(0),
        k_new.stride(0), k_new.stride(1), v_new.stride(0), v_new.stride(1), out.stride(0), out.stride(1),
        stride_cos, sm_scale * log2e, min_chunk, eps, balanced.items if balanced is not None else seq_lens,
        BALANCED=balanced is not None, GROUP=group, NUM_HEADS=num_heads, HEAD_DIM=head_dim,
        MAX_SPLITS=max_splits if balanced is None else 1,  # a plan's items need no split count
        BLOCK_H=block_h, BLOCK_N=block_n, BLOCK_D=block_d, HEAD_BLOCKS=head_blocks, USE_DOT=use_dot,
        DOT_PRECISION=precision, STORE_NEW=new_kv is not None, DIRECT=max_splits == 1 and balanced is None,
        WIDE=compute_dtype(q.dtype, k_buf.dtype), HEADS_FIRST=heads_first, ORDERED=order is not None,
        PREFETCH_LINES=lines, LINE=line, ROPE=rope is not None, NORM=norm, num_warps=num_warps,
        num_stages=num_stages, **pdl,
    )
    if balanced is not None:
        balanced_merge(mid_o, mid_lse, balanced, out, pdl)
        return out
    if max_splits == 1:
        return out
    return request_merge(mid_o, mid_lse, seq_lens, out, min_chunk, block_n, pdl)
