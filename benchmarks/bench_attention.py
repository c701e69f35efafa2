"""GPU benchmark of the Triton attention kernels: correctness vs a float32 torch reference, then timing.

Reports the decode kernel's achieved bandwidth (both stages, KV + index bytes / median time) against the
device-to-device copy bandwidth measured in the same run, sweeps decode/extend launch variants, and prints
a short table last; with `--decode-shapes`, one of the decode launch sweeps of `decode_sweeps.py` instead.
Usage: `PYTHONPATH=. python benchmarks/bench_attention.py [--quick]` from the repo root (or with tierlm
installed); needs CUDA and Triton.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools

import torch
import triton
from triton.testing import do_bench, do_bench_cudagraph

from benchmarks.attention_cases import (DTYPE, HEAD_DIM, HEADS, KV_HEADS, DecodeCase, DecodeVariant, copy_bandwidth,
                                        paged_kv, reference)
from benchmarks.decode_sweeps import decode_shapes, parse_shapes
from tierlm.kernels.extend_attention import extend_attention
from tierlm.kernels.packed_tiles import packed_tiles


def extend_bench(batch: int, prefix: int, ext: int, gen: torch.Generator, variants: list[dict],
                 kv_dtype: torch.dtype = DTYPE, graph: bool = False) -> list[tuple]:
    """Each variant's error against float32 and its time: `graph` times replays of the launch captured in a CUDA
    graph (the device's time alone, as the engine's captured passes run it; without it, short launches measure the
    host's launch time instead)."""
    k_buf, v_buf, table = paged_kv(batch, prefix + ext, gen, kv_dtype)
    q = torch.randn(batch * ext, HEADS, HEAD_DIM, dtype=DTYPE, device="cuda")
    kv = torch.randn(batch * ext, 3 * KV_HEADS, HEAD_DIM, dtype=DTYPE, device="cuda")
    rounded = kv_dtype != DTYPE  # as the engine runs a narrower pool: its store rounds the new K/V back first
    if rounded:
        kv = kv.to(kv_dtype).to(DTYPE)
    k, v = kv[:, :KV_HEADS], kv[:, 2 * KV_HEADS:]  # strided, like the model's QKV split
    out = torch.empty_like(q)
    rows = torch.arange(batch, dtype=torch.int32, device="cuda")
    prefix_lens = torch.full((batch,), prefix, dtype=torch.int32, device="cuda")
    indptr = torch.arange(batch + 1, dtype=torch.int32, device="cuda") * ext
    seq = torch.full((batch,), prefix + ext, dtype=torch.int32, device="cuda")
    flops = 4 * batch * HEADS * HEAD_DIM * ext * (prefix + (ext + 1) / 2)  # causal half of the new block
    results = []
    for var in variants:
        knobs = dict(var)
        if knobs.pop("prebuilt_tiles", False):  # the packed order's table built once, as a captured pass does
            knobs["tiles"] = packed_tiles(indptr, batch * ext, ext, knobs.get("block_m", 64))

        def call():
            return extend_attention(q, k, v, out, k_buf, v_buf, table, rows, prefix_lens, indptr, ext,
                                    HEAD_DIM ** -0.5, **({"new_rounded": True} if rounded else {}) | knobs)
        out.fill_(float("nan"))
        call()
        n = min(batch, 2)
        ref = reference(q.view(batch, ext, HEADS, HEAD_DIM)[:n], k_buf, v_buf, table, seq[:n],
                        # the kernel attends the new K/V rounded as the pool holds them
                        (k.to(kv_dtype).reshape(batch, ext, KV_HEADS, HEAD_DIM),
                         v.to(kv_dtype).reshape(batch, ext, KV_HEADS, HEAD_DIM)),
                        prefix)
        err = (out.view(batch, ext, HEADS, HEAD_DIM)[:n].float() - ref).abs().max().item()
        ms = (do_bench_cudagraph if graph else do_bench)(call, return_mode="median")
        results.append((var, err, ms * 1e3, flops / ms / 1e9))
    return results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller sweep")
    ap.add_argument("--decode-shapes", default="", help="only sweep decode launches at these shapes, a comma "
                    "list of BATCH:CONTEXT or BATCH:LOW-HIGH (contexts drawn uniformly; graph-replayed, so the "
                    "launch cost is left out), each optionally @NxLONG (the first N requests at context LONG)")
    ap.add_argument("--default-only", action="store_true", help="with --decode-shapes: the default launch only")
    ap.add_argument("--split-sweep", action="store_true", help="with --decode-shapes: sweep the KV tile and the "
                    "fewest tokens per split instead (small batches)")
    ap.add_argument("--order-sweep", action="store_true", help="with --decode-shapes: stage 1's programs "
                    "numbered head first and batch first, over KV tiles and warps")
    ap.add_argument("--waves-sweep", action="store_true", help="with --decode-shapes: the split count's wave "
                    "target (4-32) and the fewest tokens per split (128, 256), default launch")
    ap.add_argument("--lpt-sweep", action="store_true", help="with --decode-shapes: stage 1 with the requests "
                    "as they come and longest first (KV tile 64/128), and the sort's own time")
    ap.add_argument("--balanced-sweep", action="store_true", help="with --decode-shapes: the KV split per "
                    "request (default) and by tokens across the batch, at two launches")
    ap.add_argument("--kv-dtype", choices=("auto", "fp8"), default="auto", help="with --decode-shapes: the KV "
                    "pool's element type (auto: bf16; fp8: e4m3, as --kv-cache-dtype fp8)")
    args = ap.parse_args()
    props = torch.cuda.get_device_properties(0)
    print(f"device: {props.name} ({props.multi_processor_count} SMs); torch {torch.__version__}; "
          f"triton {triton.__version__}")
    gen = torch.Generator().manual_seed(0)
    copy_gbs = copy_bandwidth()
    print(f"D2D copy (read + write): {copy_gbs:,.0f} GB/s")
    if args.decode_shapes:
        decode_shapes(parse_shapes(args.decode_shapes), gen, copy_gbs, args.default_only, args.split_sweep,
                      torch.float8_e4m3fn if args.kv_dtype == "fp8" else DTYPE, args.order_sweep,
                      args.waves_sweep, args.lpt_sweep, args.balanced_sweep)
        return

    main_case = DecodeCase(64, 4096, gen)
    sweep = [DecodeVariant(block_n=32, dot_min_group=4, num_stages=2)]  # broadcast: 24% in run 1, kept as a check
    sweep += [DecodeVariant(block_n=n, num_warps=w, num_stages=s)
              for n, w, s in itertools.product((64, 128), (4, 8), (2, 3, 4))]
    if args.quick:
        sweep = sweep[::4]
    print("\n## decode sweep, batch 64, context 4096 (us, GB/s, % of copy, max |err| vs fp32)")
    scored = []
    for var in sweep:
        try:
            err = main_case.check(var)
            us, gbs = main_case.time_gbs(var)
        except Exception as exc:  # noqa: BLE001 - a variant that fails to compile is reported, not fatal
            print(f"{var.label():40s} failed: {type(exc).__name__}: {str(exc)[:100]}")
            continue
        scored.append((gbs, var))
        print(f"{var.label():40s} {us:9.1f} {gbs:8.0f} {100 * gbs / copy_gbs:6.1f}% {err:.2e}")
    best = max(scored, key=lambda x: x[0])[1]
    for waves, mc in ((1, 128), (2, 128), (8, 128), (4, 256), (4, 64)):
        var = dataclasses.replace(best, waves=waves, min_chunk=mc)
        us, gbs = main_case.time_gbs(var)
        scored.append((gbs, var))
        print(f"{var.label():40s} {us:9.1f} {gbs:8.0f} {100 * gbs / copy_gbs:6.1f}%")
    best = max(scored, key=lambda x: x[0])[1]
    del main_case

    print("\n## split sweep at small batch (graph-replayed us)")
    for batch, ctx in ((1, 4096), (8, 4096)):
        case = DecodeCase(batch, ctx, gen)
        line = []
        for waves, mc in itertools.product((2, 4, 8, 16), (64, 128, 256)):
            us, _ = case.time_gbs(dataclasses.replace(best, waves=waves, min_chunk=mc), graph=True)
            line.append(f"w{waves}/mc{mc}={us:.1f}")
        print(f"batch {batch} ctx {ctx}: " + " ".join(line))
        del case

    rows = []
    default = DecodeVariant()
    for batch, ctx in [(1, 512), (1, 4096), (1, 16384), (8, 1024), (8, 4096), (8, 16384), (64, 1024), (64, 4096),
                       (256, 1024), (256, 4096)]:
        case = DecodeCase(batch, ctx, gen)
        err = case.check(default)
        us, gbs = case.time_gbs(default)
        us_g, gbs_g = case.time_gbs(default, graph=True)
        us_b, gbs_b = case.time_gbs(best, graph=True)
        rows.append((batch, ctx, us, gbs, us_g, gbs_g, us_b, err))
        del case

    print("\n## extend (batch x (prefix + new)), us, TFLOP/s, max |err| vs fp32")
    ext_vars = [dict(block_m=m, block_n=n, num_warps=w, num_stages=s)
                for m, n, w, s in itertools.product((64, 128), (32, 64, 128), (4, 8), (2, 3))
                if not (m == 128 and n == 128 and w == 4)]
    if args.quick:
        ext_vars = ext_vars[::6]
    ext = extend_bench(4, 2048, 2048, gen, ext_vars)
    for var, err, us, tflops in ext:
        print(f"{str(var):70s} {us:9.1f} {tflops:7.1f} {err:.2e}")
    best_ext = max(ext, key=lambda r: r[3])
    ext_rows = [(b, p, e, *extend_bench(b, p, e, gen, [best_ext[0]])[0][1:])
                for b, p, e in [(1, 0, 8192), (8, 0, 1024), (4, 2048, 2048), (16, 1000, 200)]]

    print(f"\n## summary: {props.name}, D2D copy {copy_gbs:,.0f} GB/s; default decode: {default.label()}; "
          f"best of sweep: {best.label()}; best extend: {best_ext[0]}")
    print("decode, default variant: eager (L2 flushed, launch cost included) | CUDA graph replay | best-of-sweep graph")
    print(f"{'batch':>5} {'ctx':>6} {'eager us':>9} {'GB/s':>7} {'%copy':>6} {'graph us':>9} {'GB/s':>7} "
          f"{'%copy':>6} {'best us':>8} {'err':>8}")
    for b, c, us, gbs, us_g, gbs_g, us_b, err in rows:
        print(f"{b:5d} {c:6d} {us:9.1f} {gbs:7.0f} {100 * gbs / copy_gbs:5.1f}% {us_g:9.1f} {gbs_g:7.0f} "
              f"{100 * gbs_g / copy_gbs:5.1f}% {us_b:8.1f} {err:8.1e}")
    print(f"{'batch':>5} {'prefix':>6} {'new':>6} {'us':>9} {'TFLOP/s':>8} {'err':>8}")
    for b, p, e, err, us, tflops in ext_rows:
        print(f"{b:5d} {p:6d} {e:6d} {us:9.1f} {tflops:8.1f} {err:8.1e}")


if __name__ == "__main__":
    main()
