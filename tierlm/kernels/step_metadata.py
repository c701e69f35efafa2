"""A step's small integer moves, one launch each: table scatters and a decode graph's padded inputs.

Every decode step writes its sampled tokens into the token table, points new page slots into the request
table and copies its rows, positions and lengths into the static buffers a captured graph reads, padded to
the graph's batch size. Done with torch ops these are a dozen launches of a microsecond or two each (index
widening, dtype casts, fills), on the device between two graph replays; here each is one launch that takes
the int32 metadata as uploaded. (Off CUDA the callers run the same moves as torch ops.)
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 256


@triton.jit(do_not_specialize=["n"])
def _scatter_2d_kernel(table_ptr, rows_ptr, cols_ptr, values_ptr, n, stride_row, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = i < n
    row = tl.load(rows_ptr + i, mask=mask, other=0).to(tl.int64)  # int64: row * stride overflows int32
    col = tl.load(cols_ptr + i, mask=mask, other=0).to(tl.int64)
    value = tl.load(values_ptr + i, mask=mask, other=0)
    tl.store(table_ptr + row * stride_row + col, value.to(table_ptr.dtype.element_ty), mask=mask)


def scatter_2d(table: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor) -> None:
    """`table[rows[i], cols[i]] = values[i]` (cast to the table's integer dtype) for every i; `rows`/`cols` of
    any integer dtype. Indices must be in range and distinct pairs (as a step's token and slot writes are)."""
    n = rows.numel()
    assert cols.numel() == n and values.numel() == n and table.dim() == 2 and table.stride(1) == 1
    if n == 0:
        return
    _scatter_2d_kernel[(triton.cdiv(n, BLOCK),)](table, rows, cols, values, n, table.stride(0), BLOCK=BLOCK)


@triton.jit(do_not_specialize=["n", "size", "dummy_row"])
def _pad_inputs_kernel(rows_src, pos_src, lens_src, rows_dst, pos_dst, lens_dst, n, size, dummy_row,
                       BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    real = i < n
    pad = (i >= n) & (i < size)
    row = tl.load(rows_src + i, mask=real, other=0)
    pos = tl.load(pos_src + i, mask=real, other=0)
    length = tl.load(lens_src + i, mask=real, other=0)
    row = tl.where(real, row, dummy_row)
    length = tl.where(real, length, 1)  # the dummy request: position 0, length 1, the scratch page
    live = real | pad
    tl.store(rows_dst + i, row.to(rows_dst.dtype.element_ty), mask=live)
    tl.store(pos_dst + i, pos.to(pos_dst.dtype.element_ty), mask=live)
    tl.store(lens_dst + i, length.to(lens_dst.dtype.element_ty), mask=live)


def pad_decode_inputs(rows: torch.Tensor, positions: torch.Tensor, seq_lens: torch.Tensor,
                      rows_dst: torch.Tensor, pos_dst: torch.Tensor, lens_dst: torch.Tensor, size: int,
                      dummy_row: int) -> None:
    """Copy a decode batch's `n` rows, positions and sequence lengths into the first `n` entries of a graph's
    static buffers (casting to their dtypes) and fill entries `n .. size` with the dummy request (row
    `dummy_row`, position 0, length 1)."""
    n = rows.numel()
    assert positions.numel() == n and seq_lens.numel() == n and n <= size <= rows_dst.numel()
    _pad_inputs_kernel[(triton.cdiv(size, BLOCK),)](rows, positions, seq_lens, rows_dst, pos_dst, lens_dst, n, size,
                                                     dummy_row, BLOCK=BLOCK)
