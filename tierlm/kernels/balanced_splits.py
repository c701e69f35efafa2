"""Decode attention's KV split by tokens across the whole batch, not per request: one long request among
many short ones no longer holds a step.

The per-request split (`decode_attention`'s default) gives every request the same number of slices, fixed by the
batch size so a CUDA graph stays valid: a large batch gets one slice per request, and a request of 32K tokens
among 255 of 500 is then read by one program per KV head while the rest of the device idles (a step several
times slower than the short ones alone; docs/benchmarks.md). Here every request's slices are at most `chunk`
tokens: the batch's total length over the work items the per-request rule would launch for a batch of equal
lengths (`goal`), rounded up to whole `granule`s, so a batch of equal lengths is split as before and a long
request takes as many slices as its length asks.

`balanced_plan` writes the step's plan once, on the device (one program; every layer's launch reads it, nothing
goes back to the host, and its size depends on the batch size only, so a CUDA graph stays valid): per work item
`(request, start, end, the request's slice count)`, items past the last marked empty, and per request with
several slices `(request, first item, count)`, which stage 2 (`merge`) reduces. The items number at most
`goal + extra`: a plan that would need more doubles its chunk, and at worst gives every request one slice.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

from tierlm.kernels.launch import cdiv, next_power_of_2

DOUBLINGS = tl.constexpr(4)  # chunk doublings tried before the one-slice-per-request fallback


@dataclass(frozen=True)
class BalancedPlan:
    """A step's work items (`[I, 4]` int32: request, start, end, the request's slice count; count 0 = empty)
    and merges (`[M, 3]` int32: request, first item, count; count 0 = none)."""

    items: torch.Tensor
    merges: torch.Tensor


@triton.jit(do_not_specialize=["n_batch", "goal", "n_items", "n_merges", "min_chunk", "granule"])
def _plan_kernel(seq_lens, items, merges, n_batch, goal, n_items, n_merges, min_chunk, granule,
                 BATCH_P2: tl.constexpr, ITEMS_P2: tl.constexpr, MERGES_P2: tl.constexpr):
    offs = tl.arange(0, BATCH_P2)
    in_batch = offs < n_batch
    lens = tl.load(seq_lens + offs, mask=in_batch, other=0)
    chunk = tl.maximum(tl.cdiv(tl.sum(lens, axis=0), goal), min_chunk)
    chunk = tl.cdiv(chunk, granule) * granule
    for _ in tl.static_range(DOUBLINGS):  # the item count's bound is loose: double until the plan fits
        fits = tl.sum(tl.where(in_batch, tl.maximum(tl.cdiv(lens, chunk), 1), 0), axis=0) <= n_items
        chunk = tl.where(fits, chunk, 2 * chunk)
    fits = tl.sum(tl.where(in_batch, tl.maximum(tl.cdiv(lens, chunk), 1), 0), axis=0) <= n_items
    chunk = tl.where(fits, chunk, tl.maximum(tl.max(lens, axis=0), 1))  # one slice each: n_batch <= n_items
    splits = tl.where(in_batch, tl.maximum(tl.cdiv(lens, chunk), 1), 0)
    cum = tl.cumsum(splits, axis=0)
    first = cum - splits
    total = tl.sum(splits, axis=0)
    # every item past the last is empty; the rest are written below, at addresses disjoint from these
    offs_i = tl.arange(0, ITEMS_P2)
    tl.store(items + offs_i * 4 + 3, offs_i * 0, mask=(offs_i >= total) & (offs_i < n_items))
    most = tl.max(splits, axis=0)
    for s in range(0, most):
        here = in_batch & (s < splits)
        rec = items + (first + s) * 4
        start = s * chunk
        tl.store(rec, offs, mask=here)
        tl.store(rec + 1, offs * 0 + start, mask=here)
        tl.store(rec + 2, tl.minimum(lens, start + chunk), mask=here)
        tl.store(rec + 3, splits, mask=here)
    many = in_batch & (splits > 1)
    slot = tl.cumsum(many.to(tl.int32), axis=0) - 1
    n_many = tl.sum(many.to(tl.int32), axis=0)
    offs_m = tl.arange(0, MERGES_P2)
    tl.store(merges + offs_m * 3 + 2, offs_m * 0, mask=(offs_m >= n_many) & (offs_m < n_merges))
    keep = many & (slot < n_merges)
    tl.store(merges + slot * 3, offs, mask=keep)
    tl.store(merges + slot * 3 + 1, first, mask=keep)
    tl.store(merges + slot * 3 + 2, splits, mask=keep)


@triton.jit
def load_item(plan_items, item):
    """Work item `item` of the step's plan as (request, start, end, the request's slice count); an empty item
    (count 0; its other fields are not written) reads as request 0 with nothing to attend."""
    rec = plan_items + item.to(tl.int64) * 4
    count = tl.load(rec + 3)
    live = count > 0
    return (tl.where(live, tl.load(rec), 0), tl.where(live, tl.load(rec + 1), 0), tl.where(live, tl.load(rec + 2), 0),
            count)


@triton.jit
def store_item(o, lse, out_row, mid_o, mid_lse, item, count, heads, stride_oh, mask_h, offs_d, mask_d,
               NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr):
    """A stage-1 program's result for its item: a request with one slice writes its output (`out_row`), one with
    several this slice's row of the split scratch (item-major: row `item * NUM_HEADS + head`); an empty item
    writes nothing."""
    alone = ((heads * 0 + count) == 1) & mask_h  # per-head vectors: scalar bools break the interpreter
    part = ((heads * 0 + count) > 1) & mask_h
    tl.store(out_row + heads[:, None] * stride_oh + offs_d[None, :], o.to(out_row.dtype.element_ty),
             mask=alone[:, None] & mask_d[None, :])
    mid = item.to(tl.int64) * NUM_HEADS + heads
    tl.store(mid_o + mid[:, None] * HEAD_DIM + offs_d[None, :], o, mask=part[:, None] & mask_d[None, :])
    tl.store(mid_lse + mid, lse, mask=part)


def plan_sizes(batch: int, goal: int, extra: int) -> tuple[int, int]:
    """(work items, merge slots) of a plan: `goal + extra` items, at least one per request; as many merges as
    requests can have several slices (every item beyond one per request makes at most one more)."""
    n_items = max(batch, goal + extra)
    return n_items, max(1, min(batch, n_items - batch))


def balanced_plan(seq_lens: torch.Tensor, goal: int, extra: int, min_chunk: int, granule: int) -> BalancedPlan:
    """The step's plan for `seq_lens` (one launch; see the module docstring)."""
    batch = seq_lens.shape[0]
    n_items, n_merges = plan_sizes(batch, goal, extra)
    items = torch.empty(n_items, 4, dtype=torch.int32, device=seq_lens.device)
    merges = torch.empty(n_merges, 3, dtype=torch.int32, device=seq_lens.device)
    if batch:
        _plan_kernel[(1,)](seq_lens, items, merges, batch, max(1, goal), n_items, n_merges, min_chunk, granule,
                           BATCH_P2=next_power_of_2(batch), ITEMS_P2=next_power_of_2(n_items),
                           MERGES_P2=next_power_of_2(n_merges), num_warps=4)
    return BalancedPlan(items, merges)


@triton.jit
def _merge_kernel(mid_o, mid_lse, merges, out_ptr, stride_ob, stride_oh, NUM_HEADS: tl.constexpr,
                  HEAD_DIM: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr, PDL: tl.constexpr):
    rec = merges + tl.program_id(0) * 3
    h = tl.program_id(1)
    b = tl.load(rec)  # the plan is written before the step's first layer: read before the wait
    first = tl.load(rec + 1)
    count = tl.load(rec + 2)
    if PDL:
        gdc_launch_dependents()
        gdc_wait()
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < HEAD_DIM
    m = tl.full([], -1.0e30, tl.float32)  # finite: a record with nothing to merge gives no inf - inf
    denom = tl.zeros([], tl.float32)
    acc = tl.zeros([BLOCK_D], tl.float32)
    for s0 in range(0, count, BLOCK_S):  # online merge, BLOCK_S slices at a time
        valid = s0 + offs_s < count
        rows = (first + s0 + offs_s).to(tl.int64) * NUM_HEADS + h
        lse = tl.load(mid_lse + rows, mask=valid, other=float("-inf"))
        m_new = tl.maximum(m, tl.max(lse, axis=0))
        w = tl.where(valid, tl.exp2(lse - m_new), 0.0)
        o = tl.load(mid_o + rows[:, None] * HEAD_DIM + offs_d[None, :], mask=valid[:, None] & mask_d[None, :],
                    other=0.0)
        scale = tl.exp2(m - m_new)
        denom = denom * scale + tl.sum(w, axis=0)
        acc = acc * scale + tl.sum(w[:, None] * o, axis=0)
        m = m_new
    res = acc / tl.where(denom > 0, denom, 1.0)
    tl.store(out_ptr + tl.maximum(b, 0).to(tl.int64) * stride_ob + h * stride_oh + offs_d,
             res.to(out_ptr.dtype.element_ty), mask=mask_d & ((offs_d * 0 + count) > 1))


def merge(mid_o: torch.Tensor, mid_lse: torch.Tensor, plan: BalancedPlan, out: torch.Tensor, pdl: dict) -> None:
    """Stage 2 of a balanced launch: the slices of every request that has several, into `out` `[B, H, D]`."""
    num_heads, head_dim = out.shape[1], out.shape[2]
    _merge_kernel[(plan.merges.shape[0], num_heads)](
        mid_o, mid_lse, plan.merges, out, out.stride(0), out.stride(1), NUM_HEADS=num_heads, HEAD_DIM=head_dim,
        BLOCK_S=16, BLOCK_D=next_power_of_2(head_dim), num_warps=4 if head_dim >= 128 else 2, **pdl)


def scratch_splits(batch: int, items: int) -> int:
    """Split-scratch slots per request (`[B, H, S, D]`) that hold `items` work items, one row per item."""
    return cdiv(items, max(1, batch))
