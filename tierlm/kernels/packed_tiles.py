"""The packed launch order's work table: the (request, q-block rank) each tile of an extend launch owns.

A captured pass's extend grid is fixed at capture (the q-blocks its rows can hold, for any mix of up to `batch`
requests), so the host cannot number its programs pass by pass. What a tile owns depends only on the pass's
`qo_indptr`, the same for every layer: one small launch per pass writes the table (`packed_tiles`), and each
layer's extend programs read their entry instead of each searching `qo_indptr` again.

Order: the q-blocks of rank 0 (every request's last block) request by request, then those of rank 1, ...; so the
longest causal rows start first and only blocks that exist are numbered. A tile past the last block gets a rank
no request has, and its programs store nothing.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from tierlm.kernels.launch import cdiv, next_power_of_2


@triton.jit
def packed_work(tile, qo_indptr, batch, BLOCK_M: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_R: tl.constexpr):
    """(request, q-block rank) of `tile` in the packed order. Needs BLOCK_B >= batch and BLOCK_R >= the most
    q-blocks of any request."""
    offs_b = tl.arange(0, BLOCK_B)
    in_batch = offs_b < batch
    lens = (tl.load(qo_indptr + offs_b + 1, mask=in_batch, other=0)
            - tl.load(qo_indptr + offs_b, mask=in_batch, other=0))
    blocks = (lens + BLOCK_M - 1) // BLOCK_M
    # below[r - 1]: the blocks of ranks < r, for r = 1..BLOCK_R; it rises until every request's blocks are counted
    ranks = tl.arange(0, BLOCK_R) + 1
    below = tl.sum(tl.minimum(blocks[None, :], ranks[:, None]), axis=1)
    rank = tl.sum((below <= tile).to(tl.int32), axis=0)
    nth = tile - tl.sum(tl.minimum(blocks, rank), axis=0)  # among the requests that have a block of this rank
    has = (blocks > rank).to(tl.int32)
    b = tl.sum((tl.cumsum(has, axis=0) <= nth).to(tl.int32), axis=0)
    return tl.minimum(b, batch - 1), rank


@triton.jit(do_not_specialize=("batch", "num_tiles"))
def _packed_tiles_kernel(qo_indptr, table, batch, num_tiles, BLOCK_M: tl.constexpr, BLOCK_B: tl.constexpr,
                         BLOCK_R: tl.constexpr):
    tile = tl.program_id(0)
    b, rank = packed_work(tile, qo_indptr, batch, BLOCK_M, BLOCK_B, BLOCK_R)
    tl.store(table + tile, b)
    tl.store(table + num_tiles + tile, rank)


def packed_tile_count(batch: int, num_tokens: int, max_extend: int, block_m: int) -> int:
    """Tiles of a packed launch over `num_tokens` rows of at most `batch` requests, none longer than
    `max_extend`: every full q-block, and at most one partial block per request with tokens."""
    return min(batch * cdiv(max_extend, block_m), num_tokens // block_m + min(batch, num_tokens))


def packed_tiles(qo_indptr: torch.Tensor, num_tokens: int, max_extend: int, block_m: int) -> torch.Tensor:
    """The work table `[2, tiles]` int32 (requests, then ranks) of a packed extend launch over `qo_indptr`
    (`[batch + 1]`, device side: the launch reads it, so it can be captured in a graph and replayed for any
    lengths that fit `num_tokens` rows and `max_extend` tokens a request)."""
    batch = qo_indptr.shape[0] - 1
    tiles = packed_tile_count(batch, num_tokens, max_extend, block_m)
    table = torch.empty(2, tiles, dtype=torch.int32, device=qo_indptr.device)
    if tiles:
        _packed_tiles_kernel[(tiles,)](qo_indptr, table, batch, tiles, BLOCK_M=block_m,
                                       BLOCK_B=next_power_of_2(batch),
                                       BLOCK_R=max(16, next_power_of_2(cdiv(max_extend, block_m))))
    return table
