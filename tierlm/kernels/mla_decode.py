"""Split-KV decode for multi-head latent attention (MLA) over a token-granular `req_to_token` table.

Every head attends over the same per-token latent `[kv_lora_rank + rope_dim]`: the query (already absorbed
into latent space) scores `q_c · c + q_r · k_r`, where `c` is the compressed KV (first `kv_lora_rank`
entries) and `k_r` the roped key part (the rest), and the value is `c` itself. So one program takes a block
of heads (`BLOCK_H`, through `tl.dot`) and one slice of a request's sequence: each latent is read once per
head block and serves as key and value.

Stage 1, grid `(batch, head_blocks, max_splits)`: online softmax over the slice, normalised partial output
`[BLOCK_H, kv_lora_rank]` plus its log-sum-exp (base 2). Stage 2, grid `(batch, heads, kv_lora_rank /
MERGE_D)`, merges the slices by their LSEs, looping over the slices a request has: a 512-wide latent output
of up to 64 slices held in registers at once (as the GQA kernel's stage 2 holds its 128-wide ones) spills,
and a batch-1 step would spend more on the merge than on the attention. Slices are derived on the device from
each sequence length, exactly as in `tierlm.kernels.decode_attention`, so the launch depends on the batch size
only (CUDA-graph safe).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from tierlm.kernels.launch import cdiv, next_power_of_2
from tierlm.kernels.mla_tile import BOUNDED, latent_tile
from tierlm.kernels.pool_dtype import compute_dtype, widen_q
from tierlm.kernels.request_splits import split_range

MERGE_D = 128  # latent columns per stage-2 program


@triton.jit
def _mla_decode_stage1(
    q_ptr, latent_buf, req_to_token, req_rows, seq_lens, mid_o, mid_lse,
    stride_qb, stride_qh, stride_buf, stride_r2t,
    sm_scale_log2, min_chunk,
    NUM_HEADS: tl.constexpr, LORA: tl.constexpr, ROPE: tl.constexpr, MAX_SPLITS: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_R: tl.constexpr,
    DOT_PRECISION: tl.constexpr, WIDE: tl.constexpr,
):
    b = tl.program_id(0)
    hb = tl.program_id(1)
    split = tl.program_id(2)
    heads = hb * BLOCK_H + tl.arange(0, BLOCK_H)
    mask_h = heads < NUM_HEADS
    offs_c = tl.arange(0, BLOCK_C)
    mask_c = offs_c < LORA
    offs_r = tl.arange(0, BLOCK_R)
    mask_r = offs_r < ROPE

    seq_len = tl.load(seq_lens + b)
    _, start, end = split_range(seq_len, split, min_chunk, MAX_SPLITS, BLOCK_N)
    row = tl.load(req_rows + b).to(tl.int64)

    q_row = q_ptr + b.to(tl.int64) * stride_qb + heads[:, None] * stride_qh
    q_c = widen_q(tl.load(q_row + offs_c[None, :], mask=mask_h[:, None] & mask_c[None, :], other=0.0), WIDE)
    q_r = widen_q(tl.load(q_row + LORA + offs_r[None, :], mask=mask_h[:, None] & mask_r[None, :], other=0.0), WIDE)
    # Finite initial max: a fully masked tile then gives p = 0 and alpha = 1, never NaN.
    m_i = tl.full([BLOCK_H], -1.0e30, dtype=tl.float32)
    l_i = tl.zeros([BLOCK_H], dtype=tl.float32)
    acc = tl.zeros([BLOCK_H, BLOCK_C], dtype=tl.float32)
    slot_row = req_to_token + row * stride_r2t
    for n0 in range(start, end, BLOCK_N):
        m_i, l_i, acc = latent_tile(q_c, q_r, latent_buf, slot_row, n0, end, 0, m_i, l_i, acc, stride_buf,
                                    sm_scale_log2, LORA, ROPE, BLOCK_N, BLOCK_C, BLOCK_R, DOT_PRECISION, BOUNDED)

    valid = mask_h & ((heads * 0 + start) < end)  # per-head vector: scalar bools break the interpreter
    l_safe = tl.where(l_i > 0, l_i, 1.0)
    mid = (b.to(tl.int64) * NUM_HEADS + heads) * MAX_SPLITS + split  # [B, H, MAX_SPLITS] row index
    tl.store(mid_o + mid[:, None] * LORA + offs_c[None, :], acc / l_safe[:, None],
             mask=valid[:, None] & mask_c[None, :])
    tl.store(mid_lse + mid, m_i + tl.log2(l_safe), mask=valid)


@triton.jit
def _mla_merge(mid_o, mid_lse, seq_lens, out_ptr, stride_ob, stride_oh, min_chunk, NUM_HEADS: tl.constexpr,
               LORA: tl.constexpr, MAX_SPLITS: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_N: tl.constexpr,
               BLOCK_D: tl.constexpr):
    b = tl.program_id(0)
    h = tl.program_id(1)
    seq_len = tl.load(seq_lens + b)
    offs_s = tl.arange(0, BLOCK_S)
    # (the unused parts get names of their own: Triton refuses a loop-carried `_` that changes type)
    num_splits, starts, _ends = split_range(seq_len, offs_s, min_chunk, MAX_SPLITS, BLOCK_N)
    base = (b.to(tl.int64) * NUM_HEADS + h) * MAX_SPLITS
    # empty slices (start past the sequence) were never written: weight 0, not read
    lse = tl.load(mid_lse + base + offs_s, mask=(offs_s < num_splits) & (starts < seq_len), other=float("-inf"))
    m = tl.max(lse, axis=0)
    offs_d = tl.program_id(2) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_d < LORA
    acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    denom = 0.0
    for s in range(0, num_splits):
        _n, start, _end = split_range(seq_len, s, min_chunk, MAX_SPLITS, BLOCK_N)
        if start < seq_len:
            w = tl.exp2(tl.load(mid_lse + base + s) - m)
            acc += w * tl.load(mid_o + (base + s) * LORA + offs_d, mask=mask_d, other=0.0)
            denom += w
    res = acc / tl.where(denom > 0, denom, 1.0)  # seq_len 0 -> zeros
    tl.store(out_ptr + b.to(tl.int64) * stride_ob + h * stride_oh + offs_d, res.to(out_ptr.dtype.element_ty),
             mask=mask_d)


def mla_decode(q: torch.Tensor, latent_buf: torch.Tensor, req_to_token: torch.Tensor, req_rows: torch.Tensor,
               seq_lens: torch.Tensor, out: torch.Tensor, mid_o: torch.Tensor, mid_lse: torch.Tensor,
               sm_scale: float, *, min_chunk: int = 128, block_n: int = 32, block_h: int = 16,
               num_warps: int = 4, num_stages: int = 2) -> torch.Tensor:
    """One query token per request: `q` `[B, H, kv_lora_rank + rope_dim]` attends to the latents in slots
    `req_to_token[req_rows[b], :seq_lens[b]]` of `latent_buf` `[num_slots, kv_lora_rank + rope_dim]`.

    `out` is `[B, H, kv_lora_rank]` (the latent-space output, before the value up-projection); `mid_o`
    `[B, H, S, kv_lora_rank]` and `mid_lse` `[B, H, S]` are contiguous float32 scratch, `S` the maximum
    number of splits. Writes and returns `out`.
    """
    batch, num_heads, width = q.shape
    lora = out.shape[2]
    rope = width - lora
    max_splits = mid_o.shape[2]
    assert latent_buf.shape[1] == width and rope > 0 and out.shape[:2] == (batch, num_heads)
    assert mid_o.shape == (batch, num_heads, max_splits, lora) and mid_o.is_contiguous()
    assert mid_lse.shape == (batch, num_heads, max_splits) and mid_lse.is_contiguous()
    assert q.stride(2) == 1 and out.stride(2) == 1 and latent_buf.stride(1) == 1 and req_to_token.stride(1) == 1
    if batch == 0:
        return out
    block_h = max(16, next_power_of_2(block_h))  # tl.dot needs at least 16 rows
    precision = "ieee" if q.dtype == torch.float32 else "tf32"
    block_c = max(16, next_power_of_2(lora))
    _mla_decode_stage1[(batch, cdiv(num_heads, block_h), max_splits)](
        q, latent_buf, req_to_token, req_rows, seq_lens, mid_o, mid_lse,
        q.stride(0), q.stride(1), latent_buf.stride(0), req_to_token.stride(0),
        sm_scale * 1.4426950408889634, min_chunk,
        NUM_HEADS=num_heads, LORA=lora, ROPE=rope, MAX_SPLITS=max_splits,
        BLOCK_H=block_h, BLOCK_N=block_n, BLOCK_C=block_c, BLOCK_R=max(16, next_power_of_2(rope)),
        DOT_PRECISION=precision, WIDE=compute_dtype(q.dtype, latent_buf.dtype), num_warps=num_warps,
        num_stages=num_stages,
    )
    block_d = min(MERGE_D, next_power_of_2(lora))
    _mla_merge[(batch, num_heads, cdiv(lora, block_d))](
        mid_o, mid_lse, seq_lens, out, out.stride(0), out.stride(1), min_chunk,
        NUM_HEADS=num_heads, LORA=lora, MAX_SPLITS=max_splits, BLOCK_S=next_power_of_2(max_splits),
        BLOCK_N=block_n, BLOCK_D=block_d, num_warps=1,
    )
    return out
