"""The decode and extend kernels' benchmark cases on one GPU: Qwen3-0.6B's attention shape over a shuffled paged KV
pool, a float32 torch reference, the device's copy bandwidth, and a decode launch (`DecodeVariant`) bound to a shape
(`DecodeCase`) as a graph-capturable call. Shared by `bench_attention.py` and `decode_sweeps.py`."""
from __future__ import annotations

import dataclasses

import torch
import triton
from triton.testing import do_bench, do_bench_cudagraph

from tierlm.kernels.balanced_splits import balanced_plan, scratch_splits
from tierlm.kernels.decode_attention import decode_attention
from tierlm.kernels.longest_first import longest_first
from tierlm.kernels.request_splits import choose_max_splits
from tierlm.kvcache.pool import take_rows

HEADS, KV_HEADS, HEAD_DIM, PAGE = 16, 8, 128, 16  # Qwen3-0.6B attention shape; engine default page size
DTYPE = torch.bfloat16


@dataclasses.dataclass(frozen=True)
class DecodeVariant:
    """One set of decode launch parameters (a point of the sweep)."""

    block_n: int = 128
    dot_min_group: int = 1  # 1 -> tl.dot (group of 2 padded to 16 rows); 4 -> broadcast multiply here
    num_warps: int = 4
    num_stages: int = 2
    waves: int = 4
    min_chunk: int = 128
    heads_first: bool = True
    longest_first: bool = False
    balanced: bool = False  # the KV split by tokens across the batch (`kernels.balanced_splits`)

    def label(self) -> str:
        kind = "dot" if self.dot_min_group <= HEADS // KV_HEADS else "bcast"
        order = ("" if self.heads_first else " batch-first") + (" longest-first" if self.longest_first else "")
        order += " balanced" if self.balanced else ""
        return (f"{kind} n{self.block_n} w{self.num_warps} s{self.num_stages} waves{self.waves} mc{self.min_chunk}"
                f"{order}")


def paged_kv(batch: int, prefix: int, gen: torch.Generator, kv_dtype: torch.dtype = DTYPE):
    """KV buffers (in `kv_dtype`) and a req_to_token table for `batch` requests of `prefix` cached tokens in
    shuffled pages."""
    pages_per = triton.cdiv(prefix + 1, PAGE)
    num_pages = batch * pages_per + 1  # + scratch page 0
    pages = (torch.randperm(num_pages - 1, generator=gen) + 1).view(batch, pages_per)
    pos = torch.arange(pages_per * PAGE)
    table = (pages[:, pos // PAGE] * PAGE + pos % PAGE).int().cuda()
    k_buf = torch.randn(num_pages * PAGE, KV_HEADS, HEAD_DIM, dtype=DTYPE, device="cuda").to(kv_dtype)
    v_buf = torch.randn(num_pages * PAGE, KV_HEADS, HEAD_DIM, dtype=DTYPE, device="cuda").to(kv_dtype)
    return k_buf, v_buf, table


def reference(q, k_buf, v_buf, table, seq_lens, new_kv=None, prefix=0):
    """Float32 attention per request: q `[B, n, H, D]` over prefix slots (+ causal new K/V `[B, n, KVH, D]`)."""
    outs = []
    for b in range(q.shape[0]):
        s = int(seq_lens[b])
        slots = table[b, :s].long()
        keys, vals = take_rows(k_buf, slots).float(), take_rows(v_buf, slots).float()
        if new_kv is not None:
            keys = torch.cat([keys[:prefix], new_kv[0][b].float()])
            vals = torch.cat([vals[:prefix], new_kv[1][b].float()])
        keys = keys.repeat_interleave(HEADS // KV_HEADS, 1)
        vals = vals.repeat_interleave(HEADS // KV_HEADS, 1)
        n = q.shape[1]
        scores = torch.einsum("nhd,shd->hns", q[b].float(), keys) * HEAD_DIM ** -0.5
        mask = torch.arange(s - n, s, device="cuda")[:, None] >= torch.arange(s, device="cuda")[None, :]
        outs.append(torch.einsum("hns,shd->nhd", scores.masked_fill(~mask, float("-inf")).softmax(-1), vals))
    return torch.stack(outs)


def copy_bandwidth() -> float:
    src = torch.empty(2**30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = do_bench(lambda: dst.copy_(src), return_mode="median")
    return 2 * src.numel() / ms / 1e6  # GB/s, bytes read + written


class DecodeCase:
    """One decode shape: batch requests, each at context `ctx` (new token's KV already stored), or at
    contexts drawn uniformly from `low`..`ctx` when `low` is given; with `long = (n, c)` the first n at c."""

    def __init__(self, batch: int, ctx: int, gen: torch.Generator, low: int = 0,
                 kv_dtype: torch.dtype = DTYPE, long: tuple[int, int] = (0, 0)) -> None:
        self.batch, self.ctx = batch, ctx
        self.k_buf, self.v_buf, self.table = paged_kv(batch, max(ctx, long[1]), gen, kv_dtype)
        self.rows = torch.arange(batch, dtype=torch.int32, device="cuda")
        lens = torch.randint(low, ctx + 1, (batch,), generator=gen) if low else torch.full((batch,), ctx)
        lens[:long[0]] = long[1]  # `long`: (n, context) -- the first n requests at a long context
        self.seq_lens = lens.to(torch.int32).cuda()
        self.q = torch.randn(batch, HEADS, HEAD_DIM, dtype=DTYPE, device="cuda")
        self.out = torch.empty_like(self.q)
        # K + V + one int32 index per token
        self.bytes = int(lens.sum()) * (2 * KV_HEADS * HEAD_DIM * self.k_buf.element_size() + 4)

    def bind(self, var: DecodeVariant):
        """A no-argument call of the kernel pair with its split scratch preallocated (graph-capturable)."""
        sms = torch.cuda.get_device_properties(0).multi_processor_count
        s = choose_max_splits(self.batch, KV_HEADS, sms, waves=var.waves)
        plan = None
        if var.balanced:  # as the engine plans a step: once, shared by its layers (its time is `plan_us`)
            goal, extra = self.batch * s, triton.cdiv(var.waves * sms, KV_HEADS)
            plan = balanced_plan(self.seq_lens, goal, extra, var.min_chunk, var.min_chunk)
            s = scratch_splits(self.batch, plan.items.shape[0])
            self.plan_us = do_bench_cudagraph(lambda: balanced_plan(self.seq_lens, goal, extra, var.min_chunk,
                                                                    var.min_chunk), return_mode="median") * 1e3
        mid_o = torch.empty(self.batch, HEADS, s, HEAD_DIM, dtype=torch.float32, device="cuda")
        mid_lse = torch.empty(self.batch, HEADS, s, dtype=torch.float32, device="cuda")
        order = longest_first(self.seq_lens) if var.longest_first else None  # once per step in the engine
        return lambda: decode_attention(self.q, self.k_buf, self.v_buf, self.table, self.rows, self.seq_lens,
                                        self.out, mid_o, mid_lse, HEAD_DIM ** -0.5, min_chunk=var.min_chunk,
                                        block_n=var.block_n, dot_min_group=var.dot_min_group,
                                        num_warps=var.num_warps, num_stages=var.num_stages,
                                        heads_first=var.heads_first, order=order, balanced=plan)

    def check(self, var: DecodeVariant, rows: int = 8) -> float:
        self.out.fill_(float("nan"))
        got = self.bind(var)().float()
        n = min(rows, self.batch)
        ref = reference(self.q[:n, None], self.k_buf, self.v_buf, self.table, self.seq_lens[:n])[:, 0]
        return (got[:n] - ref).abs().max().item()

    def time_gbs(self, var: DecodeVariant, graph: bool = False) -> tuple[float, float]:
        """Median microseconds and GB/s. Eager: L2 flushed, host launch cost included. Graph: replayed
        back to back (no launch cost, no L2 flush, so contexts that fit in L2 read faster than HBM)."""
        fn = self.bind(var)
        ms = do_bench_cudagraph(fn, return_mode="median") if graph else do_bench(fn, return_mode="median")
        return ms * 1e3, self.bytes / ms / 1e6
