"""A step's next tokens in one launch over its logits: greedy rows by argmax, temperature rows by the
exponential race, each token also written where the next step reads its input.

`Sampler` draws a temperature row's token as `argmax(logits / T - log E)` with `E ~ Exp(1)` per vocabulary
entry, an exact draw from `softmax(logits / T)`. Done with torch that is six passes over a float32 copy of the
logits (noise, widen, scale, log, subtract, argmax), then a launch to store the tokens; a greedy batch takes an
argmax launch and the store. Here the logits are read once in their own dtype: each program takes one slice of
one row's vocabulary, keeps the slice's best (for a temperature row drawing `E` from Philox, keyed by the call's
seed plus the row and counted by the entry's index, four draws per Philox call), writes it out, and the row's
last program to arrive (`kernels.arrival`) picks the row's best slice, writes the token and, when asked, stores
it in the request→token table. Entries at -inf or NaN never win (a row of them gets token 0); ties go to the
lowest index, as torch's argmax breaks them. Slices are sized so that small batches still spread over the
whole device (drawing is arithmetic-bound; a lone greedy row is a read of a few hundred KB).

`E = -ln(1 - v)` with `v` uniform on 31 bits: small `E`, where the winners come from, is computed from small `v`
by its series, so it keeps `v`'s full relative resolution (drawn as `-ln(u)` it would step by 2^-24 there). On a
GPU the logarithms are the hardware's approximate ones (error near float rounding of a score), which halves
the instructions per entry; the Triton interpreter has no such instruction and uses the exact function.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from tierlm.kernels.arrival import last_to_arrive, rearm
from tierlm.kernels.launch import CachedLaunch, cdiv, next_power_of_2
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
def _penalized(x, pen_ptr, offs, mask, rep, pres, freq, FAST: tl.constexpr):
    """`x` (float32 logits at `offs`) under the penalties of a row whose marks start at `pen_ptr`, each operation
    rounded on its own as `engine.penalties.penalize` computes it with torch (no fused multiply-adds)."""
    marks = tl.load(pen_ptr + offs, mask=mask, other=0)
    count = (marks >> 1).to(tl.float32)
    if FAST:
        scaled = tl.where(x > 0, tl.math.div_rn(x, rep), libdevice.mul_rn(x, rep))
        x = tl.where(marks != 0, scaled, x)
        x = libdevice.sub_rn(x, libdevice.mul_rn(count, freq))
        return libdevice.sub_rn(x, tl.where(count > 0, pres, 0.0))
    x = tl.where(marks != 0, tl.where(x > 0, x / rep, x * rep), x)
    return x - count * freq - tl.where(count > 0, pres, 0.0)


@triton.jit
def _race_quarter(base_ptr, r, offs, vocab, inv_t, best_val, best_idx, pen_ptr, rep, pres, freq, FAST: tl.constexpr,
                  PEN: tl.constexpr):
    """One quarter of a block: `r` holds the Philox words of entries `offs`; returns the updated bests."""
    mask = offs < vocab
    x = tl.load(base_ptr + offs, mask=mask, other=float("-inf")).to(tl.float32)
    if PEN:
        x = _penalized(x, pen_ptr, offs, mask, rep, pres, freq, FAST)
    score = x * inv_t - _ln(_exp1(r, FAST), FAST)
    score = tl.where(mask & (x > float("-inf")), score, float("-inf"))
    better = score > best_val  # strictly: an earlier entry of this lane keeps a tie
    return tl.where(better, score, best_val), tl.where(better, offs, best_idx)


@triton.jit
def _best(best_val, best_idx):
    """The slice's best score and its lowest index among equals (NONE when every score is -inf)."""
    top = tl.max(best_val, axis=0)
    return top, tl.min(tl.where(best_val == top, best_idx, NONE), axis=0)


@triton.jit
def _greedy_slice(base_ptr, start, end, vocab, pen_ptr, rep, pres, freq, BLOCK: tl.constexpr, FAST: tl.constexpr,
                  PEN: tl.constexpr):
    lane = tl.arange(0, BLOCK)
    best_val = tl.full([BLOCK], float("-inf"), tl.float32)
    best_idx = tl.full([BLOCK], NONE, tl.int32)
    for base in range(start, end, BLOCK):
        offs = base + lane
        mask = offs < vocab
        x = tl.load(base_ptr + offs, mask=mask, other=float("-inf")).to(tl.float32)
        if PEN:
            x = _penalized(x, pen_ptr, offs, mask, rep, pres, freq, FAST)
        better = x > best_val  # strictly: an earlier entry of this lane keeps a tie; NaN never wins
        best_val, best_idx = tl.where(better, x, best_val), tl.where(better, offs, best_idx)
    return _best(best_val, best_idx)


@triton.jit
def _race_slice(base_ptr, start, end, vocab, inv_t, key, pen_ptr, rep, pres, freq, QUARTER: tl.constexpr,
                FAST: tl.constexpr, PEN: tl.constexpr):
    lane = tl.arange(0, QUARTER)
    best_val = tl.full([QUARTER], float("-inf"), tl.float32)
    best_idx = tl.full([QUARTER], NONE, tl.int32)
    for base in range(start, end, 4 * QUARTER):
        # entry base + j * QUARTER + i takes the j-th of Philox's four words at counter base / 4 + i
        r0, r1, r2, r3 = tl.randint4x(key, base // 4 + lane)
        best_val, best_idx = _race_quarter(base_ptr, r0, base + lane, vocab, inv_t, best_val, best_idx, pen_ptr, rep,
                                           pres, freq, FAST, PEN)
        best_val, best_idx = _race_quarter(base_ptr, r1, base + QUARTER + lane, vocab, inv_t, best_val, best_idx,
                                           pen_ptr, rep, pres, freq, FAST, PEN)
        best_val, best_idx = _race_quarter(base_ptr, r2, base + 2 * QUARTER + lane, vocab, inv_t, best_val,
                                           best_idx, pen_ptr, rep, pres, freq, FAST, PEN)
        best_val, best_idx = _race_quarter(base_ptr, r3, base + 3 * QUARTER + lane, vocab, inv_t, best_val,
                                           best_idx, pen_ptr, rep, pres, freq, FAST, PEN)
    return _best(best_val, best_idx)


@triton.jit
def _row_slice(base_ptr, temp_ptr, row, start, end, vocab, seed, pen_ptr, rep, pres, freq, QUARTER: tl.constexpr,
               FAST: tl.constexpr, GREEDY: tl.constexpr, PEN: tl.constexpr):
    """The best of one slice of a row: its argmax, or its race winner at the row's temperature."""
    if GREEDY:  # every row greedy: no temperatures, no draws
        top, idx = _greedy_slice(base_ptr, start, end, vocab, pen_ptr, rep, pres, freq, 4 * QUARTER, FAST, PEN)
    else:
        temp = tl.load(temp_ptr + row)
        if temp == 0.0:  # a greedy row of a batch that also samples
            top, idx = _greedy_slice(base_ptr, start, end, vocab, pen_ptr, rep, pres, freq, 4 * QUARTER, FAST, PEN)
        else:
            top, idx = _race_slice(base_ptr, start, end, vocab, 1.0 / temp, seed + row, pen_ptr, rep, pres, freq,
                                   QUARTER, FAST, PEN)
    return top, idx


# The key changes from call to call and the slice length with the batch size (always a whole number of blocks),
# and the tables' row strides are the engine's: left unspecialised or in one class, each variant is built once per
# logits dtype, so the start-up warm-up covers every batch size.
@triton.jit(do_not_specialize=["seed", "stride_table", "stride_pen"])
def _pick_kernel(logits_ptr, temp_ptr, val_ptr, idx_ptr, count_ptr, tok_ptr, table_ptr, site_rows, site_pos,
                 pen_table, pen_slots, pen_factors, seed, vocab, stride_row, stride_table, stride_pen, slice_len,
                 QUARTER: tl.constexpr, BLOCK_P: tl.constexpr, FAST: tl.constexpr, GREEDY: tl.constexpr,
                 STORE: tl.constexpr, PENALIZE: tl.constexpr):
    row = tl.program_id(0)
    part = tl.program_id(1)
    num_parts = tl.num_programs(1)
    base_ptr = logits_ptr + row.to(tl.int64) * stride_row
    start = part * slice_len
    end = tl.minimum(start + slice_len, vocab)
    slot = 0
    if PENALIZE:  # a row with a slot > 0 takes its penalties: marks in that row of the table, three factors
        slot = tl.load(pen_slots + row)
    if slot > 0:
        pen_ptr = pen_table + slot.to(tl.int64) * stride_pen
        rep = tl.load(pen_factors + 3 * row)
        pres = tl.load(pen_factors + 3 * row + 1)
        freq = tl.load(pen_factors + 3 * row + 2)
        top, idx = _row_slice(base_ptr, temp_ptr, row, start, end, vocab, seed, pen_ptr, rep, pres, freq, QUARTER,
                              FAST, GREEDY, PENALIZE)
    else:
        top, idx = _row_slice(base_ptr, temp_ptr, row, start, end, vocab, seed, pen_table, 1.0, 0.0, 0.0, QUARTER,
                              FAST, GREEDY, False)
    tl.store(val_ptr + row * num_parts + part, top)
    tl.store(idx_ptr + row * num_parts + part, idx)
    if last_to_arrive(count_ptr + row, num_parts):  # the row's slices are all written: pick among them
        offs = tl.arange(0, BLOCK_P)
        mask = offs < num_parts
        val = tl.load(val_ptr + row * num_parts + offs, mask=mask, other=float("-inf"), cache_modifier=".cg")
        ids = tl.load(idx_ptr + row * num_parts + offs, mask=mask, other=NONE, cache_modifier=".cg")
        best = tl.min(tl.where(val == tl.max(val, axis=0), ids, NONE), axis=0)  # slices in index order
        token = tl.where(best == NONE, 0, best)
        tl.store(tok_ptr + row, token.to(tl.int64))
        if STORE:
            dest = tl.load(site_rows + row).to(tl.int64) * stride_table + tl.load(site_pos + row)
            tl.store(table_ptr + dest, token.to(table_ptr.dtype.element_ty))
        if slot > 0:  # count the token in the row's marks: every program of the row has read them
            tl.atomic_add(pen_table + slot.to(tl.int64) * stride_pen + token, 2, sem="relaxed", scope="gpu")
        rearm(count_ptr + row)


class PickScratch:
    """The buffers a `pick_tokens` launch works in: per-row arrival counters (zero between launches: the
    last program of a row zeroes its counter again) and each slice's best, and the kernel's launches (a step
    launches it from the host). Grown on demand; launches sharing one must run in stream order."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.fast = compiled_on_gpu(device)
        self.launch = CachedLaunch(_pick_kernel, enabled=self.fast)
        self.counters = torch.zeros(0, dtype=torch.int32, device=device)
        self.vals = torch.empty(0, dtype=torch.float32, device=device)
        self.idxs = torch.empty(0, dtype=torch.int32, device=device)

    def reserve(self, rows: int, slices: int) -> None:
        if self.counters.numel() < rows:
            self.counters = torch.zeros(max(rows, 2 * self.counters.numel()), dtype=torch.int32, device=self.device)
        if self.vals.numel() < rows * slices:
            n = max(rows * slices, 2 * self.vals.numel())
            self.vals = torch.empty(n, dtype=torch.float32, device=self.device)
            self.idxs = torch.empty(n, dtype=torch.int32, device=self.device)


def pick_tokens(logits: torch.Tensor, temperatures: Optional[torch.Tensor], seed: int, scratch: PickScratch,
                store: Optional[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None, quarter: int = 512,
                programs: int = 1024, num_warps: int = 4,
                penalties: Optional[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None) -> torch.Tensor:
    """One token per row of `logits` `[B, V]` (any float dtype, last dim contiguous): its argmax where
    `temperatures` is None or the row's temperature is 0, else a draw from `softmax(logits / T)`. `seed` (a host
    int in [2**32, 2**62), so that the kernel is built once for 64-bit seeds) keys this call's random stream:
    calls with seeds further apart than the batch draw independent streams. With `store = (table, rows,
    positions)` token `i` is also written to `table[rows[i], positions[i]]` (a 2-D integer table, rows and
    positions int32 device tensors). With `penalties = (marks, slots, factors)` row `i` with `slots[i] > 0`
    (int32; 0 is no penalty) is picked from its logits under the penalties of `engine.penalties` (its marks in
    row `slots[i]` of the int32 table `marks`, its repetition, presence and frequency factors at
    `factors[3i:3i + 3]`, float32), and its token is counted in those marks. Each row is cut into slices of whole
    `4 * quarter` blocks, about `programs` slices in all. Returns int64 `[B]` on the logits' device."""
    assert logits.dim() == 2 and logits.stride(1) == 1
    assert temperatures is None or temperatures.shape == (logits.shape[0],)
    assert 2**32 <= seed < 2**62
    batch, vocab = logits.shape
    out = torch.empty(batch, dtype=torch.int64, device=logits.device)
    if batch == 0:
        return out
    block = 4 * quarter
    blocks = cdiv(vocab, block)
    parts = max(1, min(blocks, cdiv(programs, batch)))
    slice_len = cdiv(blocks, parts) * block
    parts = cdiv(vocab, slice_len)
    scratch.reserve(batch, parts)
    table, rows, positions = store if store is not None else (out, out, out)
    assert store is None or (table.dim() == 2 and table.stride(1) == 1 and rows.numel() == positions.numel() == batch)
    marks, slots, factors = penalties if penalties is not None else (out, out, out)
    assert penalties is None or (marks.dim() == 2 and marks.stride(1) == 1 and marks.shape[1] >= vocab
                                 and slots.numel() == batch and factors.numel() == 3 * batch)
    scratch.launch[(batch, parts)](logits, out if temperatures is None else temperatures, scratch.vals, scratch.idxs,
                                   scratch.counters, out, table, rows, positions, marks, slots, factors, seed, vocab,
                                   logits.stride(0), table.stride(0), marks.stride(0), slice_len, QUARTER=quarter,
                                   BLOCK_P=next_power_of_2(blocks), FAST=scratch.fast, GREEDY=temperatures is None,
                                   STORE=store is not None, PENALIZE=penalties is not None, num_warps=num_warps)
    return out


def race_sample(logits: torch.Tensor, temperatures: torch.Tensor, seed: int, quarter: int = 512,
                programs: int = 1024, num_warps: int = 4) -> torch.Tensor:
    """`pick_tokens` of temperature rows with buffers of its own (a row at temperature 0 takes its argmax)."""
    return pick_tokens(logits, temperatures, seed, PickScratch(logits.device), quarter=quarter, programs=programs,
                       num_warps=num_warps)
