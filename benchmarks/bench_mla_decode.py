"""GPU benchmark of the Triton MLA decode kernel at the DeepSeek-V2-Lite attention shape.

16 heads, kv_lora_rank 512, rope 64 (a 576-wide bf16 latent per token), page size 16, batch 1 / 64 / 256 at
context 4096. Checks each shape against a float32 torch reference (max |err|), sweeps a few launch variants
at batch 64, and reports achieved bandwidth (latent + index bytes / median time, both stages) as a fraction
of the device-to-device copy bandwidth measured in the same run; a short table comes last.
Usage: `PYTHONPATH=. python benchmarks/bench_mla_decode.py [--quick] [--small]` from the repo root; needs CUDA.

`--small`: decode-sized batches (1-64 requests, contexts 512-4,096), graph-replayed: the kernel as it is at
several `min_chunk` and `block_n`, against stage 1 followed by the GQA kernel's stage 2 (the merge MLA used
before its own), each checked against the float32 reference.
"""
from __future__ import annotations

import argparse
import dataclasses

import torch
import triton
from triton.testing import do_bench, do_bench_cudagraph

from benchmarks.attention_cases import copy_bandwidth
from tierlm.kernels.mla_decode import _mla_decode_stage1, mla_decode
from tierlm.kernels.pool_dtype import compute_dtype
from tierlm.kernels.request_splits import choose_max_splits, merge as request_merge

HEADS, LORA, ROPE, PAGE = 16, 512, 64, 16
WIDTH = LORA + ROPE
DTYPE = torch.bfloat16
SCALE = (128 + ROPE) ** -0.5  # qk_nope_head_dim + qk_rope_head_dim of V2-Lite
SHAPES = [(1, 4096), (64, 4096), (256, 4096)]


@dataclasses.dataclass(frozen=True)
class Variant:
    """One set of decode launch parameters (a point of the sweep)."""

    block_n: int = 32
    block_h: int = 16
    num_warps: int = 4
    num_stages: int = 2
    waves: int = 4
    min_chunk: int = 128
    gqa_merge: bool = False  # stage 2 by the GQA decode kernel's merge, as MLA ran before

    def label(self) -> str:
        return f"n{self.block_n} h{self.block_h} w{self.num_warps} s{self.num_stages} waves{self.waves} " \
               f"mc{self.min_chunk}" + (" gqa-merge" if self.gqa_merge else "")


class Case:
    """`batch` requests at context `ctx`, their latents in shuffled pages (new token's latent already stored)."""

    def __init__(self, batch: int, ctx: int, gen: torch.Generator) -> None:
        self.batch, self.ctx = batch, ctx
        pages_per = triton.cdiv(ctx, PAGE)
        num_pages = batch * pages_per + 1  # + scratch page 0
        pages = (torch.randperm(num_pages - 1, generator=gen) + 1).view(batch, pages_per)
        pos = torch.arange(pages_per * PAGE)
        self.table = (pages[:, pos // PAGE] * PAGE + pos % PAGE).int().cuda()
        self.latent = torch.randn(num_pages * PAGE, WIDTH, dtype=DTYPE, device="cuda")
        self.rows = torch.arange(batch, dtype=torch.int32, device="cuda")
        self.seq_lens = torch.full((batch,), ctx, dtype=torch.int32, device="cuda")
        self.q = torch.randn(batch, HEADS, WIDTH, dtype=DTYPE, device="cuda")
        self.out = torch.empty(batch, HEADS, LORA, dtype=DTYPE, device="cuda")
        self.bytes = batch * ctx * (WIDTH * 2 + 4)  # one latent + one int32 index per token

    def bind(self, var: Variant):
        """A no-argument call of both stages with split scratch preallocated (graph-capturable)."""
        sms = torch.cuda.get_device_properties(0).multi_processor_count
        s = choose_max_splits(self.batch, triton.cdiv(HEADS, var.block_h), sms, waves=var.waves)
        mid_o = torch.empty(self.batch, HEADS, s, LORA, dtype=torch.float32, device="cuda")
        mid_lse = torch.empty(self.batch, HEADS, s, dtype=torch.float32, device="cuda")
        if var.gqa_merge:
            return lambda: self.gqa_merged(var, mid_o, mid_lse)
        return lambda: mla_decode(self.q, self.latent, self.table, self.rows, self.seq_lens, self.out, mid_o,
                                  mid_lse, SCALE, min_chunk=var.min_chunk, block_n=var.block_n,
                                  block_h=var.block_h, num_warps=var.num_warps, num_stages=var.num_stages)

    def gqa_merged(self, var: Variant, mid_o: torch.Tensor, mid_lse: torch.Tensor) -> torch.Tensor:
        """`mla_decode`'s stage 1, then the GQA kernel's stage 2 over the whole latent width."""
        s = mid_o.shape[2]
        _mla_decode_stage1[(self.batch, triton.cdiv(HEADS, var.block_h), s)](
            self.q, self.latent, self.table, self.rows, self.seq_lens, mid_o, mid_lse, self.q.stride(0),
            self.q.stride(1), self.latent.stride(0), self.table.stride(0), SCALE * 1.4426950408889634,
            var.min_chunk, NUM_HEADS=HEADS, LORA=LORA, ROPE=ROPE, MAX_SPLITS=s, BLOCK_H=var.block_h,
            BLOCK_N=var.block_n, BLOCK_C=LORA, BLOCK_R=ROPE, DOT_PRECISION="tf32", WIDE=compute_dtype(DTYPE, DTYPE),
            num_warps=var.num_warps, num_stages=var.num_stages)
        return request_merge(mid_o, mid_lse, self.seq_lens, self.out, var.min_chunk, var.block_n, {})

    def check(self, var: Variant, rows: int = 8) -> float:
        """Max |err| of the first `rows` requests against float32 torch latent attention."""
        self.out.fill_(float("nan"))
        got = self.bind(var)().float()
        errs = []
        for b in range(min(rows, self.batch)):
            lat = self.latent[self.table[b, :self.ctx].long()].float()
            probs = (self.q[b].float() @ lat.T * SCALE).softmax(-1)
            errs.append((got[b] - probs @ lat[:, :LORA]).abs().max().item())
        return max(errs)

    def time_gbs(self, var: Variant, graph: bool = False) -> tuple[float, float]:
        """Median microseconds and GB/s. Eager: L2 flushed, launch cost included. Graph: replayed back to back."""
        fn = self.bind(var)
        fn()
        ms = do_bench_cudagraph(fn) if graph else do_bench(fn, return_mode="median")
        return ms * 1e3, self.bytes / ms / 1e6


SMALL = [(1, 512), (1, 4096), (4, 1024), (16, 1024), (64, 4096)]


def small_sweep(gen: torch.Generator) -> None:
    """Graph-replayed us of both stages per (batch, context) and launch, with the max |err| of each."""
    variants = [Variant(gqa_merge=True), Variant()] + [Variant(min_chunk=mc) for mc in (64, 32, 16)] + [
        Variant(block_n=16, min_chunk=32), Variant(block_n=16, min_chunk=16)]
    cases = [Case(b, c, gen) for b, c in SMALL]
    print("\n## decode-sized batches, graph-replayed us (max |err| vs float32)")
    print(f"{'launch':40s}" + "".join(f"{f'{c.batch}x{c.ctx}':>16}" for c in cases))
    for var in variants:
        cells = []
        for case in cases:
            try:
                us, _ = case.time_gbs(var, graph=True)
                cells.append(f"{us:7.1f} ({case.check(var):.0e})")
            except Exception as exc:  # noqa: BLE001 - report and go on
                cells.append(f"{type(exc).__name__[:15]:>15}")
        print(f"{var.label():40s}" + "".join(f"{cell:>16}" for cell in cells), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="skip the launch-variant sweep")
    ap.add_argument("--small", action="store_true", help="only the decode-sized sweep (see the docstring)")
    args = ap.parse_args()
    props = torch.cuda.get_device_properties(0)
    gen = torch.Generator().manual_seed(0)
    copy_gbs = copy_bandwidth()
    print(f"{props.name}: D2D copy (read + write) {copy_gbs:,.0f} GB/s")
    default = Variant()
    cases = {shape: Case(*shape, gen) for shape in SHAPES}

    if not args.quick:
        print("\n## decode sweep, batch 64, context 4096 (eager us, GB/s, % of copy, max |err| vs fp32)")
        case = cases[(64, 4096)]
        sweep = [dataclasses.replace(default, **kw) for kw in (
            {}, dict(block_n=16), dict(block_n=64), dict(num_warps=8), dict(num_stages=1), dict(num_stages=3),
            dict(block_n=64, num_warps=8), dict(waves=2), dict(waves=8), dict(min_chunk=256))]
        for var in sweep:
            try:
                us, gbs = case.time_gbs(var)
                err = case.check(var)
                print(f"{var.label():40s} {us:9.1f} {gbs:8.0f} {100 * gbs / copy_gbs:6.1f}% {err:.2e}")
            except Exception as exc:  # noqa: BLE001 - a variant may not fit shared memory; report and go on
                print(f"{var.label():40s} failed: {type(exc).__name__}: {str(exc)[:80]}")

    if args.small:
        small_sweep(gen)
        return
    rows = []
    for (b, c), case in cases.items():
        err = case.check(default)
        us, gbs = case.time_gbs(default)
        us_g, gbs_g = case.time_gbs(default, graph=True)
        rows.append((b, c, us, gbs, us_g, gbs_g, err))
    print(f"\n## summary: {props.name}, DeepSeek-V2-Lite MLA decode (H={HEADS}, lora={LORA}, rope={ROPE}, bf16), "
          f"D2D copy {copy_gbs:,.0f} GB/s; launch {default.label()}")
    print(f"{'batch':>5} {'ctx':>6} {'eager us':>9} {'GB/s':>7} {'%copy':>6} {'graph us':>9} {'GB/s':>7} "
          f"{'%copy':>6} {'max err':>8}")
    for b, c, us, gbs, us_g, gbs_g, err in rows:
        print(f"{b:5d} {c:6d} {us:9.1f} {gbs:7.0f} {100 * gbs / copy_gbs:5.1f}% {us_g:9.1f} {gbs_g:7.0f} "
              f"{100 * gbs_g / copy_gbs:5.1f}% {err:8.1e}")


if __name__ == "__main__":
    main()
