"""Decode launch sweeps at given shapes (`bench_attention.py --decode-shapes ...`): every launch variant, or one
question at a time (split sizes, program order, wave targets, longest first, the split by tokens), graph-replayed,
with the default and the best per shape last."""
from __future__ import annotations

import itertools

import torch
from triton.testing import do_bench_cudagraph

from benchmarks.attention_cases import DTYPE, DecodeCase, DecodeVariant
from tierlm.kernels.longest_first import longest_first


def parse_shapes(spec: str) -> list[tuple[int, int, int, tuple[int, int]]]:
    """`BATCH:CONTEXT` or `BATCH:LOW-HIGH`, each optionally `@NxLONG`, comma-separated, as
    (batch, low, high, (n_long, long_context))."""
    shapes = []
    for one in spec.split(","):
        one, _, long = one.partition("@")
        batch, ctx = one.split(":")
        low, _, high = ctx.rpartition("-")
        n_long, _, ctx_long = long.partition("x")
        shapes.append((int(batch), int(low or 0), int(high), (int(n_long or 0), int(ctx_long or 0))))
    return shapes


def decode_shapes(shapes: list[tuple[int, int, int, tuple[int, int]]], gen: torch.Generator, copy_gbs: float,
                  default_only: bool = False, splits: bool = False, kv_dtype: torch.dtype = DTYPE,
                  order: bool = False, waves: bool = False, lpt: bool = False, balanced: bool = False) -> None:
    """Every decode launch variant (tiles, warps, stages, split waves) at each shape, graph-replayed; the
    default and the best per shape last. `default_only`: the default launch alone (how the shape, not the
    launch, moves the bandwidth). `splits`: instead, how finely the KV is split (KV tile and fewest tokens per
    split, with two wave targets), for small batches whose few programs leave SMs idle. `kv_dtype`: the
    pool's. `order`: instead, stage 1's programs numbered head first and batch first, over KV tiles and warps.
    `waves`: instead, the split count's wave target and the fewest tokens per split, with the default launch
    (how many splits pay at mixed lengths, where a batch waits for its longest requests). `lpt`: instead,
    stage 1 with the requests as they come and longest first (KV tile 64/128, 4 warps), and the sort's own
    time (once per step in the engine, not per layer). `balanced`: instead, the KV split per request and by
    tokens across the batch, each at two launches."""
    variants = [DecodeVariant(block_n=n, num_warps=w, num_stages=st, waves=wv)
                for n, w, st, wv in itertools.product((64, 128), (4, 8), (2, 3), (4, 16))]
    if default_only:
        variants = [DecodeVariant()]
    if splits:
        variants = [DecodeVariant(block_n=n, min_chunk=mc, waves=wv) for (n, mc), wv in itertools.product(
            ((128, 128), (64, 64), (64, 128), (32, 32), (32, 64)), (4, 16))]
    if order:
        variants = [DecodeVariant(block_n=n, num_warps=w, heads_first=h)
                    for h, n, w in itertools.product((True, False), (64, 128), (4, 8))]
    if waves:
        variants = [DecodeVariant(waves=w, min_chunk=mc) for w, mc in itertools.product((4, 8, 16, 32), (128, 256))]
    if balanced:
        variants = [DecodeVariant(block_n=n, num_stages=st, balanced=bal)
                    for bal, (n, st) in itertools.product((False, True), ((128, 2), (64, 3)))]
    if lpt:
        variants = [DecodeVariant(block_n=n, longest_first=lf) for lf, n in itertools.product((False, True), (128, 64))]
    summary = []
    for batch, low, ctx, long in shapes:
        case = DecodeCase(batch, ctx, gen, low, kv_dtype, long)
        contexts = (f"{low}-{ctx}" if low else f"{ctx}") + (f"@{long[0]}x{long[1]}" if long[0] else "")
        shape = f"{batch}x{contexts}"
        timed = []
        for var in variants:
            err = case.check(var)
            us, gbs = case.time_gbs(var, graph=True)
            timed.append((us, gbs, var))
            print(f"{shape} {var.label():40s} {us:9.1f} us {gbs:7.0f} GB/s {err:.1e}", flush=True)
        default = next(t for t in timed if t[2] == DecodeVariant())
        best = min(timed, key=lambda t: t[0])
        summary.append((batch, contexts, default, best))
        if order or lpt or balanced:
            which = "heads_first" if order else "longest_first" if lpt else "balanced"
            first = min((t for t in timed if getattr(t[2], which)), key=lambda t: t[0])
            other = min((t for t in timed if not getattr(t[2], which)), key=lambda t: t[0])
            tag = "order" if order else "lpt" if lpt else "split"
            print(f"{tag} {shape}: {which} {first[0]:.1f} us ({first[1]:.0f} GB/s, {first[2].label()}), "
                  f"not {other[0]:.1f} us ({other[1]:.0f} GB/s, {other[2].label()}): "
                  f"{first[0] / other[0]:.3f}x")
        if balanced:
            print(f"split {shape}: the step's plan alone {case.plan_us:.1f} us (once per step, not per layer)",
                  flush=True)
        if lpt:
            sort_us = do_bench_cudagraph(lambda: longest_first(case.seq_lens), return_mode="median") * 1e3
            print(f"lpt {shape}: the sort alone {sort_us:.1f} us", flush=True)
        del case
    print(f"\n{'shape':<21} {'default us':>10} {'GB/s':>6} {'% copy':>7} {'best us':>8} {'GB/s':>6}  best")
    for batch, ctx, d, b in summary:
        print(f"{batch:>4}x{ctx:<16} {d[0]:10.1f} {d[1]:6.0f} {100 * d[1] / copy_gbs:6.1f}% {b[0]:8.1f} {b[1]:6.0f}  "
              f"{b[2].label()}")
