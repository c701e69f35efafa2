"""GPU benchmark of the Triton attention kernels: correctness vs a float32 torch reference, then timing.

Reports the decode kernel's achieved bandwidth (both stages, KV + index bytes / median time) against the
device-to-device copy bandwidth measured in the same run, sweeps decode/extend launch variants, and prints
a short table last. Usage: `PYTHONPATH=. python benchmarks/bench_attention.py [--quick]` from the repo
root (or with tierlm installed); needs CUDA and Triton.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools

import torch
import triton
from triton.testing import do_bench, do_bench_cudagraph

from tierlm.kernels.balanced_splits import balanced_plan, scratch_splits
from tierlm.kernels.decode_attention import choose_max_splits, decode_attention
from tierlm.kernels.longest_first import longest_first
from tierlm.kernels.extend_attention import extend_attention
from tierlm.kernels.packed_tiles import packed_tiles
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
            s = scratch_splits(self.batch, goal, extra)
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
        shapes = []
        for spec in args.decode_shapes.split(","):
            spec, _, long = spec.partition("@")
            batch, ctx = spec.split(":")
            low, _, high = ctx.rpartition("-")
            n_long, _, ctx_long = long.partition("x")
            shapes.append((int(batch), int(low or 0), int(high), (int(n_long or 0), int(ctx_long or 0))))
        decode_shapes(shapes, gen, copy_gbs, args.default_only, args.split_sweep,
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
