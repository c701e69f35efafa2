"""How fast can this GPU read its memory, and what does that make the least time a decode step can take?

A batch-1 decode step must read every weight once, so the fastest pure read of that many bytes bounds the
step from below, whatever the kernels. This script times a read-only Triton kernel (each program sums one
block of a buffer into one float) over several block sizes and warp counts, `torch.amax`, `torch.sum` and a
device-to-device copy for comparison, on a buffer of the given size, and prints the floor it implies for
each byte count asked for (`--floors NAME=GB,...`, by default the two decode goals' models: their
layer weights, what a decode step reads (layers and LM head, not the embedding table), and all weights).

`--sizes-mb 32,50,...` instead times one read kernel per buffer of each size, cycling inside one CUDA graph
through enough distinct buffers (1 GiB or more in all) that none is read from L2: how fast a single kernel
can read a linear layer's weight (a large read hides its start and its tail; a small one cannot); with `--tma`,
also a kernel whose tiles the Tensor Memory Accelerator brings into shared memory.

Usage: PYTHONPATH=. python benchmarks/read_floor.py [--gb 16.06] [--reps 20] [--floors qwen3-0.6b=0.88,...]
[--sizes-mb 8,32,... [--tma]]. Needs CUDA.
"""
from __future__ import annotations

import argparse
import itertools

import torch
import triton
import triton.language as tl

from benchmarks.timing import median_seconds


@triton.jit
def _read_kernel(src, out, BLOCK: tl.constexpr, ITERS: tl.constexpr = 1):
    """Program i sums elements [i*BLOCK*ITERS, (i+1)*BLOCK*ITERS) of `src`, a block per iteration (no mask:
    the caller sizes the grid)."""
    pid = tl.program_id(0).to(tl.int64)  # buffers past 2**31 elements
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for i in range(ITERS):
        acc += tl.load(src + (pid * ITERS + i) * BLOCK + tl.arange(0, BLOCK), cache_modifier=".cg").to(tl.float32)
    tl.store(out + pid, tl.sum(acc, axis=0))


@triton.jit
def _tma_read_kernel(src_desc, out, BLOCK_R: tl.constexpr, COLS: tl.constexpr, ITERS: tl.constexpr,
                     STAGES: tl.constexpr = 3):
    """Program i sums rows [i*BLOCK_R*ITERS, (i+1)*BLOCK_R*ITERS) of `src` viewed as `[rows, COLS]`, one
    `[BLOCK_R, COLS]` tile per iteration brought into shared memory by the Tensor Memory Accelerator."""
    pid = tl.program_id(0)
    acc = tl.zeros([BLOCK_R, COLS], dtype=tl.float32)
    for i in tl.range(ITERS, num_stages=STAGES):  # STAGES tiles in flight (a sum is not pipelined by default)
        acc += src_desc.load([(pid * ITERS + i) * BLOCK_R, 0]).to(tl.float32)
    tl.store(out + pid, tl.sum(tl.sum(acc, axis=1), axis=0))


def tma_reads(n: int, bufs: list) -> list:
    """(label, launches over `bufs`, their output) of the TMA read kernel's sweep over `n`-element buffers."""
    from triton.tools.tensor_descriptor import TensorDescriptor

    cols, out = 256, []
    for rows, iters, warps, stages in itertools.product((32, 64), (4, 16), (4,), (3, 6)):
        programs = n // (cols * rows * iters)
        res = torch.empty(programs, dtype=torch.float32, device=bufs[0].device)
        descs = [TensorDescriptor(b, [n // cols, cols], [cols, 1], [rows, cols]) for b in bufs]
        out.append((f"tma {rows}x{cols} x {iters}, {warps} warps, {stages} stages", [
            lambda d=d, res=res, p=programs, rows=rows, iters=iters, warps=warps, stages=stages: _tma_read_kernel[(p,)](
                d, res, BLOCK_R=rows, COLS=cols, ITERS=iters, STAGES=stages, num_warps=warps) for d in descs],
            res, programs * rows * iters * cols))
    return out


def per_size(sizes_mb: list[float], tma: bool = False) -> None:
    """The best single-kernel read of a buffer of each size, L2 cold, against a copy and `torch.sum`; with
    `tma`, also the best read through TMA descriptors."""
    from triton.testing import do_bench_cudagraph

    def gbs(calls: list, nbytes: int) -> float:  # calls replayed back to back in one graph, each its own buffer
        return nbytes * len(calls) / do_bench_cudagraph(lambda: [c() for c in calls], return_mode="median") / 1e6

    print(f"{'MB':>6} {'copy r+w GB/s':>14} {'torch.sum':>10} {'read kernel':>12}  best launch"
          + ("  |  tma read  best launch" if tma else ""))
    for mb in sizes_mb:
        n = int(mb * 1e6) // 2 // 16384 * 16384
        bufs = [torch.ones(n, dtype=torch.bfloat16, device="cuda") for _ in range(max(2, -(-(1 << 30) // (2 * n))))]
        dsts = [torch.empty_like(b) for b in bufs]
        copy = gbs([lambda s=s, d=d: d.copy_(s) for s, d in zip(bufs, dsts)], 4 * n)
        del dsts
        summed = gbs([lambda b=b: b.sum(dtype=torch.float32) for b in bufs], 2 * n)
        best = (0.0, "")
        for block, iters, warps in itertools.product((1024, 4096, 8192), (1, 4, 16), (4, 8)):
            out = torch.empty(n // (block * iters), dtype=torch.float32, device="cuda")
            covered = out.numel() * block * iters  # the programs' whole blocks: up to one block short of n
            calls = [lambda b=b: _read_kernel[(out.numel(),)](b, out, BLOCK=block, ITERS=iters, num_warps=warps)
                     for b in bufs]
            rate = gbs(calls, 2 * covered)
            if float(out.sum(dtype=torch.float64)) != covered:
                raise SystemExit(f"read kernel (block {block} x {iters}) summed {float(out.sum())}, expected {covered}")
            best = max(best, (rate, f"block {block} x {iters}, {warps} warps"))
        line = f"{mb:6.0f} {copy:14.0f} {summed:10.0f} {best[0]:12.0f}  {best[1]}"
        if tma:
            best_tma = (0.0, "")
            for label, calls, res, elements in tma_reads(n, bufs):
                rate = gbs(calls, 2 * elements)
                if float(res.sum(dtype=torch.float64)) != elements:
                    raise SystemExit(f"tma read kernel ({label}) summed {float(res.sum())}, expected {elements}")
                best_tma = max(best_tma, (rate, label))
            line += f"  |  {best_tma[0]:8.0f}  {best_tma[1]}"
        print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=16.06, help="buffer size in GB (1e9 bytes)")
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--floors", default="qwen3-0.6b layers=0.88,qwen3-0.6b step=1.19,llama-3.1-8b all=16.06,"
                                            "llama-3.1-8b step=15.01",
                        help="NAME=GB pairs: the least time to read that many bytes at the best rate measured")
    parser.add_argument("--sizes-mb", default="", help="instead, the best single-kernel read of a buffer of each "
                        "size (MB, comma list), from HBM")
    parser.add_argument("--tma", action="store_true", help="with --sizes-mb: also reads through TMA descriptors")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("read_floor.py needs CUDA")
    if args.sizes_mb:
        print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}")
        per_size([float(s) for s in args.sizes_mb.split(",")], args.tma)
        return
    n = int(args.gb * 1e9) // 2
    src = torch.ones(n, dtype=torch.bfloat16, device="cuda")
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    out = torch.empty(n // 2048, dtype=torch.float32, device="cuda")
    rows = []
    for block in (2048, 4096, 8192, 16384):
        for warps in (4, 8, 16):
            grid = (n // block,)

            def run(grid=grid, block=block, warps=warps):
                _read_kernel[grid](src, out, BLOCK=block, num_warps=warps)

            seconds = median_seconds(run, args.reps, warmup=2)
            total = float(out[: grid[0]].sum(dtype=torch.float64))
            if abs(total - grid[0] * block) > 1e-6 * n:
                raise SystemExit(f"read kernel summed {total}, expected {grid[0] * block}")
            rows.append((f"triton block {block} w{warps}", grid[0] * block * 2 / seconds / 1e12))
    rows.append(("torch.amax", n * 2 / median_seconds(lambda: src.amax(), args.reps, warmup=2) / 1e12))
    sum_s = median_seconds(lambda: src.sum(dtype=torch.float32), args.reps, warmup=2)
    rows.append(("torch.sum", n * 2 / sum_s / 1e12))
    half = src[: n // 2]
    dst = torch.empty_like(half)
    copy_s = median_seconds(lambda: dst.copy_(half), args.reps, warmup=2)
    rows.append(("copy (read + write bytes)", 2 * half.numel() * 2 / copy_s / 1e12))
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}, "
          f"{args.gb} GB buffer, median of {args.reps}")
    print(f"{'read path':<40} {'TB/s':>7}")
    for name, rate in rows:
        print(f"{name:<40} {rate:7.3f}")
    best = max(rate for name, rate in rows if not name.startswith("copy"))
    print(f"best read {best:.3f} TB/s")
    for spec in args.floors.split(","):
        name, gb = spec.rsplit("=", 1)
        print(f"floor {name}: {float(gb) / best:.3f} ms to read {float(gb)} GB")


if __name__ == "__main__":
    main()
