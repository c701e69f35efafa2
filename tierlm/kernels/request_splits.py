"""Decode attention's KV split per request: every request of a batch gets the same number of slices.

`choose_max_splits` fixes the number from the batch size alone (so a CUDA graph captured for one batch size stays
valid whatever the lengths); `split_range` says, on the device, which slices of a request exist for its length
(`min(max_splits, ceil(seq_len / min_chunk))` of them, in whole `BLOCK_N` tiles), so stage 1 and `merge` agree on
them; `merge` reduces the slices' partial outputs by their log-sum-exps. The other rule, slices by tokens across
the batch, is `balanced_splits`.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

from tierlm.kernels.launch import cdiv, next_power_of_2


@triton.jit
def split_range(seq_len, split, min_chunk, MAX_SPLITS: tl.constexpr, BLOCK_N: tl.constexpr):
    # Shared by stage 1 and the merge so they agree on which slices exist. Slices are whole BLOCK_N tiles, so
    # with rounding the last few of a request may be empty (start >= seq_len): stage 1 writes nothing for them
    # and the merge skips them.
    num_splits = tl.maximum(tl.minimum(tl.cdiv(seq_len, min_chunk), MAX_SPLITS), 1)
    chunk = tl.cdiv(tl.cdiv(seq_len, num_splits), BLOCK_N) * BLOCK_N
    start = split * chunk
    end = tl.minimum(start + chunk, seq_len)
    return num_splits, start, end


@triton.jit
def _request_merge_kernel(
    mid_o, mid_lse, seq_lens, out_ptr, stride_ob, stride_oh, min_chunk,
    NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, MAX_SPLITS: tl.constexpr,
    BLOCK_S: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, PDL: tl.constexpr = False,
):
    b = tl.program_id(0)
    h = tl.program_id(1)
    seq_len = tl.load(seq_lens + b)  # written before the step: read before the wait
    if PDL:
        gdc_launch_dependents()
        gdc_wait()
    offs_s = tl.arange(0, BLOCK_S)
    num_splits, start, _ = split_range(seq_len, offs_s, min_chunk, MAX_SPLITS, BLOCK_N)
    valid = (offs_s < num_splits) & (start < seq_len)
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < HEAD_DIM
    base = (b.to(tl.int64) * NUM_HEADS + h) * MAX_SPLITS
    lse = tl.load(mid_lse + base + offs_s, mask=valid, other=float("-inf"))
    m = tl.max(lse, axis=0)
    w = tl.where(valid, tl.exp2(lse - m), 0.0)
    o = tl.load(mid_o + (base + offs_s)[:, None] * HEAD_DIM + offs_d[None, :],
                mask=valid[:, None] & mask_d[None, :], other=0.0)
    denom = tl.sum(w, axis=0)
    res = tl.sum(w[:, None] * o, axis=0) / tl.where(denom > 0, denom, 1.0)  # seq_len 0 -> zeros
    tl.store(out_ptr + b.to(tl.int64) * stride_ob + h * stride_oh + offs_d, res.to(out_ptr.dtype.element_ty),
             mask=mask_d)


def choose_max_splits(batch_size: int, num_kv_heads: int, num_sms: int, waves: int = 4, cap: int = 64) -> int:
    """KV splits per request so that stage 1 launches about `waves` programs per SM (a power of two).

    Depends on the batch size only, so a CUDA graph captured for one batch size can be replayed.
    """
    want = cdiv(waves * num_sms, max(1, batch_size * num_kv_heads))
    return max(1, min(cap, next_power_of_2(want)))


def merge(mid_o: torch.Tensor, mid_lse: torch.Tensor, seq_lens: torch.Tensor, out: torch.Tensor, min_chunk: int,
          block_n: int, pdl: dict) -> torch.Tensor:
    """Reduce `mid_o` `[B, H, S, D]` (float32 partial outputs per slice; `mid_lse` `[B, H, S]`, their base-2
    log-sum-exps) into `out` `[B, H, D]`; `min_chunk` and `block_n` as stage 1 split by, `pdl` its
    `pdl.launch_kwargs`."""
    batch, num_heads, max_splits, head_dim = mid_o.shape
    assert out.shape == (batch, num_heads, head_dim) and out.stride(2) == 1
    _request_merge_kernel[(batch, num_heads)](
        mid_o, mid_lse, seq_lens, out, out.stride(0), out.stride(1), min_chunk,
        NUM_HEADS=num_heads, HEAD_DIM=head_dim, MAX_SPLITS=max_splits,
        BLOCK_S=next_power_of_2(max_splits), BLOCK_N=block_n, BLOCK_D=next_power_of_2(head_dim),
        num_warps=4 if head_dim >= 128 else 2, **pdl,
    )
    return out
