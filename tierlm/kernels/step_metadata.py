"""A step's small integer moves, one launch each: table scatters, a pass's per-token inputs expanded from its
per-request metadata, and a captured graph's padded inputs.

A step points new page slots into the request table, expands its requests' rows, prefixes and offsets into
each token's input id, position and KV slot (reading the tables), and copies its metadata into the static
buffers a captured graph reads, padded to the graph's shape. Done with torch ops these are a dozen launches of
a microsecond or two each (index widening, dtype casts, gathers, fills) and per-token lists built on the host;
here each is one launch that takes the int32 metadata as uploaded. (Off CUDA the callers run the same moves as
torch ops.)
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from tierlm.kernels.launch import CachedLaunch, cdiv

BLOCK = 256


@triton.jit(do_not_specialize=["n"])
def _scatter_2d_kernel(table_ptr, rows_ptr, cols_ptr, values_ptr, n, stride_row, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = i < n
    row = tl.load(rows_ptr + i, mask=mask, other=0).to(tl.int64)  # int64: row * stride overflows int32
    col = tl.load(cols_ptr + i, mask=mask, other=0).to(tl.int64)
    value = tl.load(values_ptr + i, mask=mask, other=0)
    tl.store(table_ptr + row * stride_row + col, value.to(table_ptr.dtype.element_ty), mask=mask)


def scatter_2d(table: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor,
               launch: Optional[CachedLaunch] = None) -> None:
    """`table[rows[i], cols[i]] = values[i]` (cast to the table's integer dtype) for every i; `rows`/`cols` of
    any integer dtype. Indices must be in range and distinct pairs (as a step's token and slot writes are).
    `launch`: the caller's `scatter_launch`."""
    n = rows.numel()
    assert cols.numel() == n and values.numel() == n and table.dim() == 2 and table.stride(1) == 1
    if n == 0:
        return
    (launch or _scatter_2d_kernel)[(cdiv(n, BLOCK),)](table, rows, cols, values, n, table.stride(0), BLOCK=BLOCK)


def scatter_launch(device: torch.device) -> CachedLaunch:
    """A `CachedLaunch` of `scatter_2d`'s kernel for its owner (a request table) on `device`."""
    return CachedLaunch.on(_scatter_2d_kernel, device)


@triton.jit(do_not_specialize=["m", "n", "size", "dummy_row"])
def _pad_inputs_kernel(rows_src, pos_src, lens_src, rows_dst, pos_dst, lens_dst, ids_dst, loc_dst, prefix_dst,
                       table_ptr, token_ids_ptr, w_rows, w_pos, w_slots, m, n, size, dummy_row, stride_table,
                       BLOCK: tl.constexpr):
    # one program: the table entries first, then (past a barrier of the whole program, which makes them visible to
    # every thread of it) the rows' slots read back, some of them just written (a token that starts a new page)
    lane = tl.arange(0, BLOCK)
    for base in range(0, m, BLOCK):
        j = base + lane
        mask = j < m
        w_at = tl.load(w_rows + j, mask=mask, other=0).to(tl.int64) * stride_table + tl.load(w_pos + j, mask=mask)
        tl.store(table_ptr + w_at, tl.load(w_slots + j, mask=mask).to(table_ptr.dtype.element_ty), mask=mask)
    tl.debug_barrier()
    for base in range(0, size, BLOCK):
        i = base + lane
        real = i < n
        live = i < size
        row = tl.where(real, tl.load(rows_src + i, mask=real, other=0), dummy_row)
        pos = tl.load(pos_src + i, mask=real, other=0)
        length = tl.where(real, tl.load(lens_src + i, mask=real, other=0), 1)  # the dummy: position 0, length 1
        # each row's input (sampled into the token table by an earlier step) and KV slot, read from the tables
        at = row.to(tl.int64) * stride_table + pos
        tl.store(ids_dst + i, tl.load(token_ids_ptr + at, mask=live, other=0).to(ids_dst.dtype.element_ty),
                 mask=live)
        tl.store(loc_dst + i, tl.load(table_ptr + at, mask=live, other=0).to(loc_dst.dtype.element_ty), mask=live)
        tl.store(rows_dst + i, row.to(rows_dst.dtype.element_ty), mask=live)
        tl.store(pos_dst + i, pos.to(pos_dst.dtype.element_ty), mask=live)
        tl.store(prefix_dst + i, pos.to(prefix_dst.dtype.element_ty), mask=live)  # a decode row's prefix: its position
        tl.store(lens_dst + i, length.to(lens_dst.dtype.element_ty), mask=live)


def pad_decode_inputs(src: tuple[torch.Tensor, torch.Tensor, torch.Tensor], dst: tuple[torch.Tensor, ...],
                      table: torch.Tensor, token_ids: torch.Tensor, size: int, dummy_row: int,
                      writes: Optional[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None,
                      launch: Optional[CachedLaunch] = None) -> None:
    """A decode batch's inputs into a captured graph's static buffers, padded to its batch size, in one launch.

    `src`: the batch's `n` (rows, positions, sequence lengths). `dst`: the graph's (rows, positions, sequence
    lengths, input ids, KV slots, prefix lengths): entries `[0, n)` take the batch's (cast to the buffers' dtypes),
    entries `n .. size` the dummy request (row `dummy_row`, position 0, length 1); each entry's input id and slot
    are read from `token_ids` and `table` (the request tables) at its row and position, its prefix length is its
    position. `writes` (rows, positions, slots): the step's new `table` entries, written first (one program runs
    it all, so they are in place before any slot is read). `launch`: the caller's `CachedLaunch` of the kernel
    (`pad_decode_launch`), which runs every decode step."""
    rows, positions, seq_lens = src
    n = rows.numel()
    w = writes if writes is not None else (rows[:0], rows[:0], rows[:0])
    assert len(dst) == 6 and positions.numel() == n and seq_lens.numel() == n
    assert w[0].numel() == w[1].numel() == w[2].numel()
    assert n <= size <= min(d.numel() for d in dst) and table.stride(1) == 1 and token_ids.stride() == table.stride()
    (launch or _pad_inputs_kernel)[(1,)](rows, positions, seq_lens, *dst, table, token_ids, *w, w[0].numel(), n,
                                         size, dummy_row, table.stride(0), BLOCK=BLOCK)


def pad_decode_launch(device: torch.device) -> CachedLaunch:
    """A `CachedLaunch` of `pad_decode_inputs`' kernel for its owner (a decode graph runner) on `device`."""
    return CachedLaunch.on(_pad_inputs_kernel, device)


@triton.jit(do_not_specialize=["t", "d", "e", "base", "n", "c", "size", "dummy_row", "dummy_slot"])
def _pad_mixed_kernel(ids_src, pos_src, loc_src, rows_src, prefix_src, seq_src, qo_src,
                      ids_dst, pos_dst, loc_dst, rows_dst, prefix_dst, seq_dst, qo_dst,
                      t, d, e, base, n, c, size, dummy_row, dummy_slot, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    # token rows [0, n): the chunks' [0, t), padding, the decodes' [base, base + d), padding
    chunk = i < t
    take = chunk | ((i >= base) & (i < base + d))
    src = tl.where(chunk, i, i - base + t)
    ids = tl.load(ids_src + src, mask=take, other=0)
    pos = tl.load(pos_src + src, mask=take, other=0)
    loc = tl.load(loc_src + src, mask=take, other=0)
    tl.store(ids_dst + i, ids.to(ids_dst.dtype.element_ty), mask=take)  # a padding row's input is never read out
    tl.store(pos_dst + i, pos.to(pos_dst.dtype.element_ty), mask=i < n)
    tl.store(loc_dst + i, tl.where(take, loc, dummy_slot).to(loc_dst.dtype.element_ty), mask=i < n)
    # requests [0, c + size): the chunks' [0, e), empty chunks to c, the decodes' [c, c + d), the dummy request
    r_chunk = i < e
    r_decode = (i >= c) & (i < c + d)
    r_src = tl.where(r_chunk, i, i - c + e)
    live = i < c + size
    row = tl.load(rows_src + r_src, mask=r_chunk | r_decode, other=dummy_row)
    prefix = tl.load(prefix_src + r_src, mask=r_chunk, other=0)
    seq = tl.load(seq_src + r_src, mask=r_decode, other=1)
    tl.store(rows_dst + i, row.to(rows_dst.dtype.element_ty), mask=live)
    tl.store(prefix_dst + i, tl.where(i < c, prefix, seq - 1).to(prefix_dst.dtype.element_ty), mask=live)
    tl.store(seq_dst + i, seq.to(seq_dst.dtype.element_ty), mask=live & (i >= c))
    # the chunks' offsets [0, c]: the real ones, then t (empty chunks)
    qo = tl.load(qo_src + i, mask=i <= e, other=t)
    tl.store(qo_dst + i, qo.to(qo_dst.dtype.element_ty), mask=i <= c)


def pad_mixed_inputs(src: tuple[torch.Tensor, ...], dst: tuple[torch.Tensor, ...], chunk_rows: int, decodes: int,
                     chunks: int, decode_base: int, rows: int, max_chunks: int, decode_size: int, dummy_row: int,
                     dummy_slot: int) -> None:
    """A mixed or prefill pass's inputs into a captured pass's static buffers, padded to its shape, in one launch.

    `src`: the batch's (input ids, positions, slots) of its tokens, `chunk_rows` of `chunks` prefill chunks then
    `decodes` one-token requests, and its (request rows, prefix lengths, sequence lengths, chunk offsets `[chunks
    + 1]`). `dst`: the same seven buffers of the captured pass: token rows `[0, rows)` hold the chunks' tokens
    from 0 and the decodes' from `decode_base`, the rows between and after are padding (position 0, the scratch
    slot `dummy_slot`; their input ids are left as they are); requests `[0, max_chunks)` are the chunks, those
    past the real ones empty (row `dummy_row`, no prefix), then `decode_size` decode requests, the real ones and
    then the dummy request (length 1); the offsets past the real chunks are `chunk_rows`."""
    c, size = max_chunks, decode_size
    assert len(src) == len(dst) == 7 and chunks <= c and decodes <= size and chunk_rows <= decode_base
    assert decode_base + size <= rows <= dst[0].numel() and c + size <= dst[3].numel() and c + 1 <= dst[6].numel()
    span = max(rows, c + size, c + 1)
    _pad_mixed_kernel[(cdiv(span, BLOCK),)](*src, *dst, chunk_rows, decodes, chunks, decode_base, rows, c,
                                            size, dummy_row, dummy_slot, BLOCK=BLOCK)


SEARCH_STEPS = tl.constexpr(16)  # binary search steps over a pass's requests: enough for 65,536 of them


@triton.jit(do_not_specialize=["t", "b"])
def _expand_kernel(ids_src, rows_ptr, prefix_ptr, qo_ptr, table_ptr, token_ids_ptr, ids_dst, pos_dst, loc_dst,
                   t, b, stride_table, FROM_TABLE: tl.constexpr, DECODE: tl.constexpr, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = i < t
    if DECODE:  # token i is request i's one token, at its prefix length
        pos = tl.load(prefix_ptr + i, mask=mask, other=0)
        row = tl.load(rows_ptr + i, mask=mask, other=0)
    else:
        # token i's request: the last j in [0, b) with qo[j] <= i (a request without tokens shares its offset with
        # the next one, so the last of equal offsets is the one holding i); steps past the answer change nothing
        lo = tl.zeros([BLOCK], dtype=tl.int32)
        hi = tl.full([BLOCK], 0, tl.int32) + b
        for _ in tl.static_range(SEARCH_STEPS):
            mid = (lo + hi) // 2
            below = tl.load(qo_ptr + mid, mask=mask, other=0) <= i
            lo = tl.where(below, mid, lo)
            hi = tl.where(below, hi, mid)
        pos = tl.load(prefix_ptr + lo, mask=mask, other=0) + i - tl.load(qo_ptr + lo, mask=mask, other=0)
        row = tl.load(rows_ptr + lo, mask=mask, other=0)
    at = row.to(tl.int64) * stride_table + pos
    loc = tl.load(table_ptr + at, mask=mask, other=0)
    if DECODE:
        ids = tl.load(token_ids_ptr + at, mask=mask, other=0)
    else:
        raw = tl.load(ids_src + i, mask=mask, other=0)
        ids = tl.where(raw == FROM_TABLE, tl.load(token_ids_ptr + at, mask=mask & (raw == FROM_TABLE), other=0), raw)
    tl.store(ids_dst + i, ids.to(ids_dst.dtype.element_ty), mask=mask)
    tl.store(pos_dst + i, pos.to(pos_dst.dtype.element_ty), mask=mask)
    tl.store(loc_dst + i, loc.to(loc_dst.dtype.element_ty), mask=mask)


def expand_launch(device: torch.device) -> CachedLaunch:
    """A `CachedLaunch` of `expand_tokens`' kernel for its owner (a model runner) on `device`."""
    return CachedLaunch.on(_expand_kernel, device)


def expand_tokens(ids: Optional[torch.Tensor], rows: torch.Tensor, prefix: torch.Tensor, qo: Optional[torch.Tensor],
                  table: torch.Tensor, token_ids: torch.Tensor, from_table: int, kernel: Optional[bool] = None,
                  launch: Optional[CachedLaunch] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A pass's per-token inputs from its per-request metadata: (input ids, positions, KV slots), int64 `[T]`.

    Request `j` (row `rows[j]` of the request tables, `prefix[j]` tokens already cached) owns tokens `qo[j] ..
    qo[j + 1] - 1` (`qo` int32 `[B + 1]`, `T == len(ids)`); its token `i` sits at position `prefix[j] + i -
    qo[j]`, whose slot is `table[rows[j], position]`. `ids` are the pass's input ids as planned, `from_table`
    where the token table holds the input (a decoding request's, sampled by an earlier step). `ids` None: a
    decode pass (one token per request, its input in the token table; `qo` unused). One launch on CUDA
    (`kernel`: the default there; `launch`: the caller's `expand_launch`), torch ops elsewhere; so the host
    builds no per-token list of rows and positions."""
    batch = rows.numel()
    decode = ids is None
    num_tokens = batch if decode else ids.numel()
    assert prefix.numel() == batch and (decode or qo.numel() == batch + 1)
    if kernel if kernel is not None else table.is_cuda:
        # each output starts 16 bytes in, as fresh tensors do: the kernels that take them specialize on alignment
        stride = num_tokens + num_tokens % 2
        out = torch.empty((3, stride), dtype=torch.int64, device=table.device)[:, :num_tokens]
        if num_tokens:
            (launch or _expand_kernel)[(cdiv(num_tokens, BLOCK),)](
                rows if decode else ids, rows, prefix, rows if decode else qo, table, token_ids, out[0], out[1], out[2],
                num_tokens, batch, table.stride(0), FROM_TABLE=from_table, DECODE=decode, BLOCK=BLOCK)
        return out[0], out[1], out[2]
    if decode:
        tok_rows, pos = rows.long(), prefix.long()
    else:
        qo = qo.long()
        owner = torch.repeat_interleave(torch.arange(batch, device=qo.device), qo[1:] - qo[:-1],
                                        output_size=num_tokens)
        tok_rows = rows.long()[owner]
        pos = prefix.long()[owner] + torch.arange(num_tokens, device=qo.device) - qo[owner]
    from_tokens = token_ids[tok_rows, pos].long()
    input_ids = from_tokens if decode else torch.where(ids == from_table, from_tokens, ids.long())
    return input_ids, pos, table[tok_rows, pos].long()
