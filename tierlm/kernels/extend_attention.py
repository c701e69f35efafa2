"""Extend (prefill / chunked prefill / prefix hit) attention: cached prefix + causal new tokens, one softmax.

A program owns `BLOCK_M` new queries of one request for `PACK` query heads of one KV group (stacked into
`PACK * BLOCK_M` rows, so each K/V tile feeds them all), then (1) walks the request's cached prefix
`[0, prefix_len)`, gathering K/V from the pool through `req_to_token`, and (2) walks the request's new K/V
`[0, min(extend_len, block_end))` straight from the contiguous projections, causally. Both feed the same
online softmax, so the result equals attention over the whole sequence with a causal mask offset by the
prefix length. With SPLIT only the tiles that need a mask get one: the prefix's partial last tile and the
causal tiles at or past the block's first query; every other tile runs unmasked (and, with USE_TMA, loads
its new K/V through tensor descriptors).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from tierlm.kernels.extend_attention_tiles import ORDERS, load_rows, program_work, softmax_step
from tierlm.kernels.launch import cdiv, next_power_of_2
from tierlm.kernels.packed_tiles import packed_tile_count, packed_tiles
from tierlm.kernels.pool_dtype import compute_dtype, to_pool, widen_q


# per-pass counts: specialising on them (== 1, multiple of 16) would compile new variants while serving
_PER_PASS = ("batch", "num_blocks", "num_tiles")


@triton.jit(do_not_specialize=_PER_PASS)
def _extend_kernel(
    q_ptr, k_ptr, v_ptr, out_ptr, k_buf, v_buf, k_desc, v_desc, req_to_token, req_rows, prefix_lens, qo_indptr,
    tile_table, num_tiles, stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_ot, stride_oh,
    stride_buf_s, stride_buf_h, stride_r2t, qk_scale, batch, num_groups, num_blocks,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr, DOT_PRECISION: tl.constexpr, PACK: tl.constexpr, ORDER: tl.constexpr,
    SPLIT: tl.constexpr, PRESCALE: tl.constexpr, USE_TMA: tl.constexpr, PREFIX_STAGES: tl.constexpr,
    CAUSAL_STAGES: tl.constexpr, ROUND_NEW: tl.constexpr, WIDEN_PREFIX: tl.constexpr,
):
    EVEN_D: tl.constexpr = HEAD_DIM == BLOCK_D
    # With SPLIT the masked loops run at most one tile (two or more on the diagonal when BLOCK_M > BLOCK_N):
    # they stay unpipelined, since pipelining a loop of zero or one trips made ptxas serialize every wgmma
    # in the kernel (its C7515 "wgmma ... serialized" note), which costs far more than the one prefetch.
    MASKED_STAGES: tl.constexpr = 1 if SPLIT else CAUSAL_STAGES
    DIAG_STAGES: tl.constexpr = CAUSAL_STAGES if (not SPLIT or BLOCK_M > BLOCK_N) else 1
    if ORDER == 3:  # the pass's table (packed_tiles) names each tile's request and rank; head group fastest
        g = tl.program_id(0) % num_groups
        tile = tl.program_id(0) // num_groups
        b = tl.load(tile_table + tile)
        rank = tl.load(tile_table + num_tiles + tile)
    else:
        b, g, rank = program_work(tl.program_id(0), batch, num_groups, num_blocks, ORDER)
    q_start = tl.load(qo_indptr + b)
    ext_len = tl.load(qo_indptr + b + 1) - q_start
    n_blocks = tl.cdiv(ext_len, BLOCK_M)
    live = rank < n_blocks  # programs past a request's blocks run zero iterations and store nothing
    if ORDER == 0:
        blk = rank
    else:
        blk = n_blocks - 1 - rank
    m0 = tl.where(live, blk, 0) * BLOCK_M
    prefix_len = tl.where(live, tl.load(prefix_lens + b), 0)
    causal_end = tl.where(live, tl.minimum(ext_len, m0 + BLOCK_M), 0)
    row = tl.load(req_rows + b).to(tl.int64)
    kv_head = g * PACK // GROUP

    # row r of the tile is query m0 + r // PACK of head g * PACK + r % PACK
    offs_r = tl.arange(0, PACK * BLOCK_M)
    offs_m = m0 + offs_r // PACK
    mask_m = offs_m < tl.where(live, ext_len, 0)
    head = g * PACK + offs_r % PACK
    tok0 = q_start.to(tl.int64)
    tok = tok0 + offs_m
    offs_d = tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    q_rows = tok * stride_qt + head * stride_qh
    q = load_rows(q_ptr, q_rows, offs_d, mask_m, HEAD_DIM, EVEN_D, True)
    if PRESCALE:
        q = (q.to(tl.float32) * qk_scale).to(q_ptr.dtype.element_ty)
    # WIDEN_PREFIX (a bf16 model over an fp8 pool): the prefix's K/V are widened to fp16 and q cast to it, as
    # decode does (`pool_dtype`): e4m3 -> bf16 costs a slow conversion per value. q is loaded again for the
    # new tokens' part, whose K/V are bf16, so only one copy of it is live at a time.
    qp = q
    if WIDEN_PREFIX:
        qp = widen_q(q, tl.float16)
    m_i = tl.full([PACK * BLOCK_M], -1.0e30, dtype=tl.float32)  # finite: masked tiles never make NaN
    l_i = tl.zeros([PACK * BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([PACK * BLOCK_M, BLOCK_D], dtype=tl.float32)

    # (1) cached prefix, through req_to_token into the pool
    slot_row = req_to_token + row * stride_r2t
    k_pool = k_buf + kv_head * stride_buf_h
    v_pool = v_buf + kv_head * stride_buf_h
    prefix_full = 0
    if SPLIT:
        prefix_full = prefix_len // BLOCK_N * BLOCK_N
    for n0 in tl.range(0, prefix_full, BLOCK_N, num_stages=PREFIX_STAGES):
        slot_off = tl.load(slot_row + n0 + offs_n).to(tl.int64) * stride_buf_s
        k = load_rows(k_pool, slot_off, offs_d, None, HEAD_DIM, EVEN_D, False).to(qp.dtype)
        v = load_rows(v_pool, slot_off, offs_d, None, HEAD_DIM, EVEN_D, False).to(qp.dtype)
        acc, m_i, l_i = softmax_step(qp, k, v, acc, m_i, l_i, None, qk_scale, False, PRESCALE, DOT_PRECISION)
    for n0 in tl.range(prefix_full, prefix_len, BLOCK_N, num_stages=MASKED_STAGES):  # SPLIT: the partial tile
        mask_n = n0 + offs_n < prefix_len
        slot_off = tl.load(slot_row + n0 + offs_n, mask=mask_n, other=0).to(tl.int64) * stride_buf_s
        k = load_rows(k_pool, slot_off, offs_d, mask_n, HEAD_DIM, EVEN_D, True).to(qp.dtype)
        v = load_rows(v_pool, slot_off, offs_d, mask_n, HEAD_DIM, EVEN_D, True).to(qp.dtype)
        acc, m_i, l_i = softmax_step(qp, k, v, acc, m_i, l_i, mask_n[None, :], qk_scale, True, PRESCALE,
                                     DOT_PRECISION)
    if WIDEN_PREFIX:
        q = load_rows(q_ptr, q_rows, offs_d, mask_m, HEAD_DIM, EVEN_D, True)
        if PRESCALE:
            q = (q.to(tl.float32) * qk_scale).to(q_ptr.dtype.element_ty)

    # (2) the new tokens themselves, causally (query m sees new keys n <= m). Keys below m0 are visible to
    # every row and lie inside the request (m0 < ext_len), so their tiles need no mask of any kind.
    # Their K/V are attended rounded as the pool holds them (a no-op unless the pool is narrower, e.g. fp8):
    # what a later pass reading them from the pool, or from a lower tier, sees. ROUND_NEW is off when the
    # caller passes them rounded already (`store_kv(..., round_back=True)`), which spares every program the
    # conversions of every tile it reads.
    k_head = k_ptr + kv_head * stride_kh
    v_head = v_ptr + kv_head * stride_vh
    causal_full = 0
    if SPLIT:
        causal_full = m0 // BLOCK_N * BLOCK_N
    for n0 in tl.range(0, causal_full, BLOCK_N, num_stages=CAUSAL_STAGES):
        if USE_TMA:
            k = k_desc.load([q_start + n0, kv_head * HEAD_DIM])
            v = v_desc.load([q_start + n0, kv_head * HEAD_DIM])
        else:
            k = load_rows(k_head + (tok0 + n0) * stride_kt, offs_n * stride_kt, offs_d, None, HEAD_DIM,
                          EVEN_D, False)
            v = load_rows(v_head + (tok0 + n0) * stride_vt, offs_n * stride_vt, offs_d, None, HEAD_DIM,
                          EVEN_D, False)
        if ROUND_NEW:
            k = to_pool(k, k_buf.dtype.element_ty)
            v = to_pool(v, v_buf.dtype.element_ty)
        acc, m_i, l_i = softmax_step(q, k.to(q.dtype), v.to(q.dtype), acc, m_i, l_i, None, qk_scale, False,
                                     PRESCALE, DOT_PRECISION)
    for n0 in tl.range(causal_full, causal_end, BLOCK_N, num_stages=DIAG_STAGES):
        keys = n0 + offs_n
        mask_n = keys < ext_len
        k = load_rows(k_head + (tok0 + n0) * stride_kt, offs_n * stride_kt, offs_d, mask_n, HEAD_DIM, EVEN_D,
                      True)
        v = load_rows(v_head + (tok0 + n0) * stride_vt, offs_n * stride_vt, offs_d, mask_n, HEAD_DIM, EVEN_D,
                      True)
        causal = (keys[None, :] <= offs_m[:, None]) & mask_n[None, :]
        if ROUND_NEW:
            k = to_pool(k, k_buf.dtype.element_ty)
            v = to_pool(v, v_buf.dtype.element_ty)
        acc, m_i, l_i = softmax_step(q, k.to(q.dtype), v.to(q.dtype), acc, m_i, l_i, causal, qk_scale, True,
                                     PRESCALE, DOT_PRECISION)

    out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
    o_ptrs = out_ptr + (tok * stride_ot + head * stride_oh)[:, None] + offs_d[None, :]
    if EVEN_D:
        tl.store(o_ptrs, out.to(out_ptr.dtype.element_ty), mask=mask_m[:, None])
    else:
        tl.store(o_ptrs, out.to(out_ptr.dtype.element_ty), mask=mask_m[:, None] & (offs_d < HEAD_DIM)[None, :])


def _tma_fits(k: torch.Tensor, v: torch.Tensor, head_dim: int) -> bool:
    """New K/V can be read as 2-D `[T, KVH * D]` tensor descriptors (heads back to back, 16-byte aligned)."""
    size = k.element_size()
    return all(t.stride(1) == head_dim and t.data_ptr() % 16 == 0 and t.stride(0) * size % 16 == 0 for t in (k, v)) \
        and head_dim == next_power_of_2(head_dim) and head_dim * size >= 16


def kernel_constants(group: int, head_dim: int, fp32: bool, *, block_m: int, block_n: int, num_stages: int,
                     causal_split: bool, order: str, pack_heads: int, prescale_q: bool, tma: bool,
                     prefix_stages: int, round_new: bool = True, widen_prefix: bool = False) -> dict:
    """The kernel's compile-time parameters for one launch variant (shared with the compile check);
    `widen_prefix`: the prefix is read as fp16 (see `widens_prefix`)."""
    assert order in ORDERS, f"order must be one of {sorted(ORDERS)}"
    assert pack_heads >= 1 and group % pack_heads == 0, "pack_heads must divide the GQA group"
    consts = dict(GROUP=group, HEAD_DIM=head_dim, BLOCK_M=block_m, BLOCK_N=block_n,
                  BLOCK_D=next_power_of_2(head_dim), DOT_PRECISION="ieee" if fp32 else "tf32",
                  PACK=pack_heads, ORDER=ORDERS[order], SPLIT=causal_split, PRESCALE=prescale_q,
                  USE_TMA=tma and causal_split, PREFIX_STAGES=prefix_stages or num_stages, CAUSAL_STAGES=num_stages,
                  ROUND_NEW=round_new, WIDEN_PREFIX=widen_prefix)
    return consts


def widens_prefix(q_dtype: torch.dtype, pool_dtype: torch.dtype) -> bool:
    """Whether the kernel reads the cached prefix in another type than the query's: fp16 for a bf16 query over
    an fp8 pool (`pool_dtype.compute_dtype`)."""
    return compute_dtype(q_dtype, pool_dtype) != compute_dtype(q_dtype, q_dtype)


def extend_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, k_buf: torch.Tensor,
                     v_buf: torch.Tensor, req_to_token: torch.Tensor, req_rows: torch.Tensor,
                     prefix_lens: torch.Tensor, qo_indptr: torch.Tensor, max_extend: int, sm_scale: float, *,
                     block_m: int = 64, block_n: int = 64, num_warps: int = 4, num_stages: int = 3,
                     causal_split: bool = True, order: str = "heavy_first", pack_heads: int = 1,
                     prescale_q: bool = False, tma: bool | None = None, prefix_stages: int = 0,
                     maxnreg: int = 0, new_rounded: bool = False, tiles: torch.Tensor | None = None) -> torch.Tensor:
    """Attention of new tokens `q` `[T, H, D]` (requests concatenated; request `b` owns rows
    `qo_indptr[b]:qo_indptr[b+1]`) over each request's cached prefix (pool slots via `req_to_token`) and,
    causally, its new `k`/`v` `[T, KVH, D]`. `max_extend` (a host int, >= every extend length) sizes the grid.
    Writes and returns `out` `[T, H, D]`.

    Tuning knobs (results are the same up to rounding): `causal_split` masks only the tiles that need it;
    `order` is the launch order (see `extend_attention_tiles.ORDERS`); `pack_heads` query heads of one KV
    group share a program (must divide H // KVH; the tile has `pack_heads * block_m` rows); `prescale_q`
    folds sm_scale * log2(e) into q once (one extra rounding of q in its dtype); `tma` reads the unmasked new
    K/V tiles through tensor descriptors (None: when on a CUDA device of compute capability >= 9 and the
    layout allows; needs `causal_split`); `prefix_stages` pipelines the prefix gather loop that deep (0: as
    `num_stages`); `maxnreg` caps registers per thread (0: no cap), to fit more programs per SM.
    `new_rounded`: `k`/`v` hold values of the pool's dtype already (see `store_kv`'s `round_back`), so the
    kernel attends them as they are instead of rounding each tile it reads. `tiles`: the packed order's work
    table for this launch (`packed_tiles` of the same `qo_indptr`, rows, `max_extend` and `block_m`), built once
    for all layers of a pass; None builds it here.
    """
    num_tokens, num_heads, head_dim = q.shape
    batch = req_rows.shape[0]
    num_blocks = cdiv(max_extend, block_m)
    assert q.stride(2) == 1 and k.stride(2) == 1 and v.stride(2) == 1 and out.stride(2) == 1
    assert k_buf.stride(2) == 1 and req_to_token.stride(1) == 1 and qo_indptr.shape[0] == batch + 1
    if tma is None:
        tma = (causal_split and q.is_cuda and torch.cuda.get_device_capability(q.device)[0] >= 9
               and _tma_fits(k, v, head_dim))
    assert not tma or _tma_fits(k, v, head_dim), "tma needs [T, KVH, D] k/v with contiguous heads, 16-byte aligned"
    consts = kernel_constants(num_heads // k.shape[1], head_dim, q.dtype == torch.float32, block_m=block_m,
                              block_n=block_n, num_stages=num_stages, causal_split=causal_split, order=order,
                              pack_heads=pack_heads, prescale_q=prescale_q, tma=bool(tma),
                              prefix_stages=prefix_stages, round_new=not new_rounded,
                              widen_prefix=widens_prefix(q.dtype, k_buf.dtype))
    if num_tokens == 0 or batch == 0:
        return out
    k_desc, v_desc = k, v  # unused placeholders unless the kernel reads through descriptors
    if consts["USE_TMA"]:
        flat = [num_tokens, k.shape[1] * head_dim]
        k_desc = TensorDescriptor(k, flat, [k.stride(0), 1], [block_n, head_dim])
        v_desc = TensorDescriptor(v, flat, [v.stride(0), 1], [block_n, head_dim])
    num_groups = num_heads // pack_heads
    num_tiles, table = batch * num_blocks, qo_indptr  # the table is read in the packed order only
    if order == "packed":
        num_tiles = packed_tile_count(batch, num_tokens, max_extend, block_m)
        table = packed_tiles(qo_indptr, num_tokens, max_extend, block_m) if tiles is None else tiles
        assert table.shape == (2, num_tiles), "tiles: packed_tiles of this launch's rows, max_extend and block_m"
    _extend_kernel[(num_tiles * num_groups,)](
        q, k, v, out, k_buf, v_buf, k_desc, v_desc, req_to_token, req_rows, prefix_lens, qo_indptr, table, num_tiles,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), out.stride(0), out.stride(1),
        k_buf.stride(0), k_buf.stride(1), req_to_token.stride(0), sm_scale * 1.4426950408889634,
        batch, num_groups, num_blocks, **consts, num_warps=num_warps, num_stages=num_stages, maxnreg=maxnreg or None,
    )
    return out
