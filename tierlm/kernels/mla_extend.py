"""Extend (prefill, chunks, prefix hits) attention for multi-head latent attention (MLA), flash style.

Every head attends over the same per-token latent `[kv_lora_rank + rope_dim]` (absorbed queries, see
`tierlm.kernels.mla_decode`), so a program stacks `BLOCK_T` new tokens times `BLOCK_H` heads into the rows of
one tile: each latent tile it gathers through `req_to_token` is the key of all those rows (`q_c · c + q_r ·
k_r`) and, its first `kv_lora_rank` entries, their value. A program walks its request's latents from 0 to
the last key its tokens see (the prefix, then the new tokens, already stored in the pool by the backend) in
one online softmax: the tiles before its first token's position unmasked, the rest with the causal mask
offset by the prefix length. Nothing materialises the `[tokens, heads, sequence]` scores, and one launch
serves every request of a pass (the torch path loops over requests and blocks of queries on the host).

Grid `(token blocks, head blocks, requests)`, the token blocks in reverse so the blocks with the most keys
start first; blocks past a request's new tokens exit at once. The launch reads the pass's per-request
extend lengths on the host (for the grid), as every extend path does.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch
import triton
import triton.language as tl

from tierlm.kernels.launch import cdiv, next_power_of_2
from tierlm.kernels.mla_tile import CAUSAL, WHOLE, latent_tile
from tierlm.kernels.pool_dtype import compute_dtype, widen_q


# Float32 queries: the program's query tile (block_t x block_h rows of the whole latent width) takes twice the
# shared memory, and with 64-latent tiles the launch needs more than a Hopper SM holds; 16-latent tiles fit
# (tests/kernels/test_sm90_compile.py)
FP32_BLOCK_N = 16


@dataclasses.dataclass(frozen=True)
class MLAExtendConfig:
    """Launch parameters: `block_t` tokens x `block_h` heads per program (their product, the tile's rows, at
    least 16), `block_n` latents per tile."""

    block_t: int = 4
    block_h: int = 16
    block_n: int = 64
    num_warps: int = 8
    num_stages: int = 2


# Per pass: the block count, and the metadata pointers (slices of the pass's packed metadata that start at the
# first absorbed request, so their 16-byte alignment varies; each is read one int at a time). Specializing on
# them would compile the kernel again mid-serving for each new combination.
@triton.jit(do_not_specialize=["num_blocks"],
            do_not_specialize_on_alignment=["req_rows", "prefix_lens", "q_starts", "q_ends"])
def _mla_extend_kernel(
    q_ptr, latent_buf, out_ptr, req_to_token, req_rows, prefix_lens, q_starts, q_ends,
    stride_qt, stride_qh, stride_ot, stride_oh, stride_buf, stride_r2t, sm_scale_log2, num_blocks,
    NUM_HEADS: tl.constexpr, LORA: tl.constexpr, ROPE: tl.constexpr, BLOCK_T: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_R: tl.constexpr,
    DOT_PRECISION: tl.constexpr, WIDE: tl.constexpr,
):
    tb = num_blocks - 1 - tl.program_id(0)  # the last blocks of a sequence see the most keys: launched first
    b = tl.program_id(2)
    q_start = tl.load(q_starts + b)
    ext = tl.load(q_ends + b) - q_start
    t0 = tb * BLOCK_T
    if t0 < ext:
        prefix = tl.load(prefix_lens + b)
        slot_row = req_to_token + tl.load(req_rows + b).to(tl.int64) * stride_r2t
        r = tl.arange(0, BLOCK_T * BLOCK_H)  # row r: token t0 + r // BLOCK_H, head of the block r % BLOCK_H
        tok = t0 + r // BLOCK_H
        head = tl.program_id(1) * BLOCK_H + r % BLOCK_H
        mask_m = (tok < ext) & (head < NUM_HEADS)
        offs_c = tl.arange(0, BLOCK_C)
        offs_r = tl.arange(0, BLOCK_R)
        q_row = q_ptr + (q_start + tok).to(tl.int64)[:, None] * stride_qt + head[:, None] * stride_qh
        q_c = widen_q(tl.load(q_row + offs_c[None, :], mask=mask_m[:, None] & (offs_c < LORA)[None, :], other=0.0),
                      WIDE)
        q_r = widen_q(tl.load(q_row + LORA + offs_r[None, :], mask=mask_m[:, None] & (offs_r < ROPE)[None, :],
                              other=0.0), WIDE)
        qpos = prefix + tok  # a row sees keys [0, qpos]
        end = prefix + tl.minimum(ext, t0 + BLOCK_T)  # one past the last key any row of the block sees
        # Finite initial max: a fully masked row then gives p = 0 and alpha = 1, never NaN.
        m_i = tl.full([BLOCK_T * BLOCK_H], -1.0e30, dtype=tl.float32)
        l_i = tl.zeros([BLOCK_T * BLOCK_H], dtype=tl.float32)
        acc = tl.zeros([BLOCK_T * BLOCK_H, BLOCK_C], dtype=tl.float32)
        free = (prefix + t0 + 1) // BLOCK_N * BLOCK_N  # every row sees every key before this: no mask
        for n0 in range(0, free, BLOCK_N):
            m_i, l_i, acc = latent_tile(q_c, q_r, latent_buf, slot_row, n0, end, qpos, m_i, l_i, acc, stride_buf,
                                        sm_scale_log2, LORA, ROPE, BLOCK_N, BLOCK_C, BLOCK_R, DOT_PRECISION, WHOLE)
        for n0 in range(free, end, BLOCK_N):
            m_i, l_i, acc = latent_tile(q_c, q_r, latent_buf, slot_row, n0, end, qpos, m_i, l_i, acc, stride_buf,
                                        sm_scale_log2, LORA, ROPE, BLOCK_N, BLOCK_C, BLOCK_R, DOT_PRECISION, CAUSAL)
        out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
        o_ptrs = out_ptr + (q_start + tok).to(tl.int64)[:, None] * stride_ot + head[:, None] * stride_oh
        tl.store(o_ptrs + offs_c[None, :], out.to(out_ptr.dtype.element_ty),
                 mask=mask_m[:, None] & (offs_c < LORA)[None, :])


def launch_block_n(config: MLAExtendConfig, dtype: torch.dtype) -> int:
    """The latent tile a launch for `dtype` queries takes: the config's, at most `FP32_BLOCK_N` for float32."""
    return min(config.block_n, FP32_BLOCK_N) if dtype == torch.float32 else config.block_n


def mla_extend(q: torch.Tensor, latent_buf: torch.Tensor, out: torch.Tensor, req_to_token: torch.Tensor,
               req_rows: torch.Tensor, prefix_lens: torch.Tensor, qo_indptr: torch.Tensor, extend_lens: list[int],
               sm_scale: float, config: MLAExtendConfig = MLAExtendConfig(),
               q_ends: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The new tokens of `len(extend_lens)` requests: request i's queries, rows `[qo_indptr[i], qo_indptr[i +
    1])` of `q` `[T, H, kv_lora_rank + rope_dim]` (with `q_ends`, rows `[qo_indptr[i], q_ends[i])`: any subset
    of a pass's requests; `extend_lens[i]` of them, positions `prefix_lens[i]` on),
    attend causally to the latents in slots `req_to_token[req_rows[i], :prefix_lens[i] + extend_lens[i]]` of
    `latent_buf` `[num_slots, kv_lora_rank + rope_dim]` (the new tokens' latents already stored there).

    `out` `[T, H, kv_lora_rank]` (the latent-space output, before the value up-projection) gets those rows;
    rows of `q` past the requests' tokens are not touched. Returns `out`.
    """
    num_heads, width = q.shape[1], q.shape[2]
    lora = out.shape[2]
    rope = width - lora
    assert latent_buf.shape[1] == width and rope > 0 and out.shape[1] == num_heads
    assert q.stride(2) == 1 and out.stride(2) == 1 and latent_buf.stride(1) == 1 and req_to_token.stride(1) == 1
    batch = len(extend_lens)
    block_h = min(next_power_of_2(num_heads), config.block_h)
    block_t = max(config.block_t, 16 // block_h)  # tl.dot needs at least 16 rows
    num_blocks = cdiv(max(extend_lens, default=0), block_t)
    if num_blocks == 0:
        return out
    ends = qo_indptr[1:] if q_ends is None else q_ends
    _mla_extend_kernel[(num_blocks, cdiv(num_heads, block_h), batch)](
        q, latent_buf, out, req_to_token, req_rows, prefix_lens, qo_indptr, ends,
        q.stride(0), q.stride(1), out.stride(0), out.stride(1), latent_buf.stride(0), req_to_token.stride(0),
        sm_scale * 1.4426950408889634, num_blocks,
        NUM_HEADS=num_heads, LORA=lora, ROPE=rope, BLOCK_T=block_t, BLOCK_H=block_h,
        BLOCK_N=launch_block_n(config, q.dtype),
        BLOCK_C=max(16, next_power_of_2(lora)), BLOCK_R=max(16, next_power_of_2(rope)),
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32", WIDE=compute_dtype(q.dtype, latent_buf.dtype),
        num_warps=config.num_warps, num_stages=config.num_stages,
    )
    return out
