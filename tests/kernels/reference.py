"""Random paged-KV scenarios and a float64 torch reference for the attention kernels (no Triton import)."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Scenario:
    """A batch of requests whose cached prefixes live in scattered pages of a random KV pool.

    Request `b` owns table row `rows[b]`; positions `[0, prefix_lens[b])` already have KV in the pool
    and `extend_lens[b]` new tokens follow, whose slots are `out_loc` (request order). The pool holds
    random values everywhere (never zeros), so reading a wrong slot shows up as a wrong answer.
    """

    q: torch.Tensor  # [T, H, D]
    k: torch.Tensor  # [T, KVH, D] new keys (a strided view of a fused tensor)
    v: torch.Tensor
    k_buf: torch.Tensor  # [num_slots, KVH, D]
    v_buf: torch.Tensor
    req_to_token: torch.Tensor  # [rows, max_len] int32
    rows: torch.Tensor  # [B] int32
    prefix_lens: torch.Tensor  # [B] int32
    seq_lens: torch.Tensor  # [B] int32
    qo_indptr: torch.Tensor  # [B+1] int32
    out_loc: torch.Tensor  # [T] int64
    extend_lens: list[int]
    prefix_list: list[int]


def make_scenario(prefix_lens: list[int], extend_lens: list[int], num_heads: int, num_kv_heads: int,
                  head_dim: int, page_size: int, dtype: torch.dtype, device: str, seed: int = 0,
                  kv_dtype: torch.dtype | None = None) -> Scenario:
    """The pool in `kv_dtype` (default `dtype`), everything else in `dtype`."""
    gen = torch.Generator().manual_seed(seed)
    batch = len(prefix_lens)
    seqs = [p + e for p, e in zip(prefix_lens, extend_lens)]
    max_len = max(seqs) + 3
    pages_needed = [-(-s // page_size) for s in seqs]
    num_pages = sum(pages_needed) * 2 + 2  # spare pages stay random garbage
    perm = (torch.randperm(num_pages - 1, generator=gen) + 1).tolist()  # page 0 is scratch: never used
    num_rows = batch + 3
    row_perm = torch.randperm(num_rows, generator=gen)[:batch]
    req_to_token = torch.randint(0, num_pages * page_size, (num_rows, max_len), generator=gen, dtype=torch.int32)
    for b, s in enumerate(seqs):
        pages = [perm.pop() for _ in range(pages_needed[b])]
        pos = torch.arange(s)
        slots = torch.tensor(pages)[pos // page_size] * page_size + pos % page_size
        req_to_token[row_perm[b], :s] = slots.to(torch.int32)

    def rnd(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(dtype)

    total = sum(extend_lens)
    kv_fused = rnd(total, 3 * num_kv_heads, head_dim)  # k/v as non-contiguous slices, like a QKV split
    out_loc = torch.cat([req_to_token[row_perm[b], p:p + e].long() for b, (p, e)
                         in enumerate(zip(prefix_lens, extend_lens))])
    indptr = torch.zeros(batch + 1, dtype=torch.int32)
    indptr[1:] = torch.cumsum(torch.tensor(extend_lens), 0)
    as_dev = dict(device=device)
    return Scenario(
        q=rnd(total, num_heads, head_dim).to(**as_dev),
        k=kv_fused.to(**as_dev)[:, :num_kv_heads], v=kv_fused.to(**as_dev)[:, 2 * num_kv_heads:],
        k_buf=rnd(num_pages * page_size, num_kv_heads, head_dim).to(device=device, dtype=kv_dtype or dtype),
        v_buf=rnd(num_pages * page_size, num_kv_heads, head_dim).to(device=device, dtype=kv_dtype or dtype),
        req_to_token=req_to_token.to(**as_dev), rows=row_perm.to(torch.int32).to(**as_dev),
        prefix_lens=torch.tensor(prefix_lens, dtype=torch.int32, device=device),
        seq_lens=torch.tensor(seqs, dtype=torch.int32, device=device),
        qo_indptr=indptr.to(**as_dev), out_loc=out_loc.to(**as_dev),
        extend_lens=list(extend_lens), prefix_list=list(prefix_lens))


def reference_attention(sc: Scenario, scale: float, new_kv_in_pool: bool) -> torch.Tensor:
    """Float64 causal attention of every new token over its request's prefix (from the pool) and new tokens.

    With `new_kv_in_pool` the new tokens' K/V are read from the pool (after a store); otherwise from `sc.k/v`.
    """
    num_heads = sc.q.shape[1]
    group = num_heads // sc.k_buf.shape[1]
    out = torch.empty(sc.q.shape, dtype=torch.float64)
    start = 0
    for b, (p, e) in enumerate(zip(sc.prefix_list, sc.extend_lens)):
        slots = sc.req_to_token[sc.rows[b].long(), :p + e].long().cpu()
        keys = sc.k_buf.cpu()[slots].double()
        vals = sc.v_buf.cpu()[slots].double()
        if not new_kv_in_pool:
            keys[p:] = sc.k[start:start + e].to(sc.k_buf.dtype).cpu().double()  # as the pool would round them
            vals[p:] = sc.v[start:start + e].to(sc.v_buf.dtype).cpu().double()
        keys = keys.repeat_interleave(group, dim=1)  # [S, H, D]
        vals = vals.repeat_interleave(group, dim=1)
        qi = sc.q[start:start + e].cpu().double()  # [e, H, D]
        scores = torch.einsum("thd,shd->hts", qi, keys) * scale
        allowed = torch.arange(p, p + e)[:, None] >= torch.arange(p + e)[None, :]
        scores = scores.masked_fill(~allowed, float("-inf"))
        out[start:start + e] = torch.einsum("hts,shd->thd", scores.softmax(-1), vals)
        start += e
    return out


def tolerance(dtype: torch.dtype) -> dict:
    return {torch.float32: dict(atol=2e-5, rtol=2e-5), torch.float16: dict(atol=4e-3, rtol=4e-3),
            torch.bfloat16: dict(atol=2e-2, rtol=2e-2)}[dtype]
