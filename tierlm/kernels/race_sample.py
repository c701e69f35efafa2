"""Temperature sampling of a batch in one pass over its logits (the exponential race, fused).

`Sampler` draws row `i`'s token as `argmax(logits / T - log E)` with `E ~ Exp(1)` per vocabulary entry, an
exact draw from `softmax(logits / T)`. Done with torch that is six passes over a float32 copy of the logits
(noise, widen, scale, log, subtract, argmax); at large batches and vocabularies of 150 thousand entries
those passes cost a sizeable part of a decode step. Here the logits are read once in their own dtype: each
program takes one slice of one row's vocabulary, draws `E` from Philox (keyed by the call's seed plus the row,
counted by the entry's index; four draws per Philox call) and keeps the slice's best; a second launch picks each
row's best slice. Entries at -inf never win; ties go to the lowest index. Slices are sized so that small batches
still spread over the whole device (drawing is arithmetic-bound).

`E = -ln(1 - v)` with `v` uniform on 31 bits: small `E`, where the winners come from, is computed from small `v`
by its series, so it keeps `v`'s full relative resolution (drawn as `-ln(u)` it would step by 2^-24 there). On a
GPU the logarithms are the hardware's approximate ones (error near float rounding of a score), which halves
the instructions per entry; the Triton interpreter has no such instruction and uses the exact function.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from tierlm.utils.triton_mode import compiled_on_gpu

NONE = tl.constexpr(2147483647)  # index of "no entry yet"
SERIES_BELOW = tl.constexpr(0.125)  # v below this: E by 8 terms of its series (relative error under 2^-24)
V_MAX = tl.constexpr(0.99999994)  # the largest float below 1: E stays finite


@triton.jit
def _ln(x, FAST: tl.constexpr):
    if FAST:
        return libdevice.fast_logf(x)
    return tl.log(x)


@triton.jit
def _exp1(r, FAST: tl.constexpr):
    """Exp(1) draws from 32-bit Philox words: `E = -ln(1 - v)`, `v = (|r| + 1/2) 2^-31` in (0, 1)."""
    k = r.to(tl.int32, bitcast=True)
    k = tl.where(k < 0, -k - 1, k)
    v = tl.minimum((k.to(tl.float32) + 0.5) * 4.656612873077393e-10, V_MAX)
    series = v * (1.0 + v * (0.5 + v * (0.33333334 + v * (0.25 + v * (0.2 + v * (0.16666667 + v * (
        0.14285715 + v * 0.125)))))))
    return tl.where(v < SERIES_BELOW, series, -_ln(1.0 - v, FAST))


@triton.jit
def _race_quarter(base_ptr, r, offs, vocab, inv_t, best_val, best_idx, FAST: tl.constexpr):
    """One quarter of a block: `r` holds the Philox words of entries `offs`; returns the updated bests."""
    mask = offs < vocab
    x = tl.load(base_ptr + offs, mask=mask, other=float("-inf")).to(tl.float32)
    score = x * inv_t - _ln(_exp1(r, FAST), FAST)
    score = tl.where(mask & (x > float("-inf")), score, float("-inf"))
    better = score > best_val  # strictly: an earlier entry of this lane keeps a tie
    return tl.where(better, score, best_val), tl.where(better, offs, best_idx)


# The key and the slice count change from call to call; left unspecialised, each kernel is built once per logits
# dtype (and BLOCK_P depends on the vocabulary only), so the start-up warm-up covers every batch size.
@triton.jit(do_not_specialize=["seed"])
def _race_slices(logits_ptr, temp_ptr, val_ptr, idx_ptr, seed, vocab, stride_row, slice_len,
                 QUARTER: tl.constexpr, FAST: tl.constexpr):
    row = tl.program_id(0)
    part = tl.program_id(1)
    num_parts = tl.num_programs(1)
    inv_t = 1.0 / tl.load(temp_ptr + row)
    base_ptr = logits_ptr + row.to(tl.int64) * stride_row
    best_val = tl.full([QUARTER], float("-inf"), tl.float32)
    best_idx = tl.full([QUARTER], NONE, tl.int32)
    lane = tl.arange(0, QUARTER)
    start = part * slice_len
    for base in range(start, tl.minimum(start + slice_len, vocab), 4 * QUARTER):
        # entry base + j * QUARTER + i takes the j-th of Philox's four words at counter base / 4 + i
        r0, r1, r2, r3 = tl.randint4x(seed + row, base // 4 + lane)
        best_val, best_idx = _race_quarter(base_ptr, r0, base + lane, vocab, inv_t, best_val, best_idx, FAST)
        best_val, best_idx = _race_quarter(base_ptr, r1, base + QUARTER + lane, vocab, inv_t, best_val, best_idx,
                                           FAST)
        best_val, best_idx = _race_quarter(base_ptr, r2, base + 2 * QUARTER + lane, vocab, inv_t, best_val,
                                           best_idx, FAST)
        best_val, best_idx = _race_quarter(base_ptr, r3, base + 3 * QUARTER + lane, vocab, inv_t, best_val,
                                           best_idx, FAST)
    top = tl.max(best_val, axis=0)
    idx = tl.min(tl.where(best_val == top, best_idx, NONE), axis=0)
    tl.store(val_ptr + row * num_parts + part, top)
    tl.store(idx_ptr + row * num_parts + part, idx)


@triton.jit(do_not_specialize=["num_parts"])
def _race_pick(val_ptr, idx_ptr, tok_ptr, num_parts, BLOCK_P: tl.constexpr):
    row = tl.program_id(0)
    offs = tl.arange(0, BLOCK_P)
    mask = offs < num_parts
    val = tl.load(val_ptr + row * num_parts + offs, mask=mask, other=float("-inf"))
    idx = tl.load(idx_ptr + row * num_parts + offs, mask=mask, other=NONE)
    top = tl.max(val, axis=0)
    best = tl.min(tl.where(val == top, idx, NONE), axis=0)  # slices are in index order: lowest index wins ties
    tl.store(tok_ptr + row, tl.where(best == NONE, 0, best).to(tl.int64))


def race_sample(logits: torch.Tensor, temperatures: torch.Tensor, seed: int, quarter: int = 512,
                programs: int = 1024, num_warps: int = 4) -> torch.Tensor:
    """One token per row of `logits` `[B, V]` (any float dtype, last dim contiguous) drawn from
    `softmax(logits / temperatures[:, None])`; `seed` (a host int in [2**32, 2**62), so that the kernel is
    built once for 64-bit seeds) keys this call's random stream: calls with seeds further apart than the batch
    draw independent streams. Each row is cut into slices of whole `4 * quarter` blocks, about `programs`
    slices in all. A row whose logits are all -inf gets token 0. Returns int64 `[B]` on the logits' device."""
    assert logits.dim() == 2 and logits.stride(1) == 1 and temperatures.shape == (logits.shape[0],)
    assert 2**32 <= seed < 2**62
    batch, vocab = logits.shape
    out = torch.empty(batch, dtype=torch.int64, device=logits.device)
    if batch == 0:
        return out
    block = 4 * quarter
    blocks = triton.cdiv(vocab, block)
    parts = max(1, min(blocks, triton.cdiv(programs, batch)))
    slice_len = triton.cdiv(blocks, parts) * block
    parts = triton.cdiv(vocab, slice_len)
    vals = torch.empty(batch, parts, dtype=torch.float32, device=logits.device)
    idxs = torch.empty(batch, parts, dtype=torch.int32, device=logits.device)
    fast = compiled_on_gpu(logits.device)
    _race_slices[(batch, parts)](logits, temperatures, vals, idxs, seed, vocab, logits.stride(0), slice_len,
                                 QUARTER=quarter, FAST=fast, num_warps=num_warps)
    _race_pick[(batch,)](vals, idxs, out, parts, BLOCK_P=triton.next_power_of_2(blocks), num_warps=1)
    return out
