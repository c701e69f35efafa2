"""How fast this GPU reads HBM: the ceiling the decode kernels and the batch-1 linears are measured against.

A device-to-device copy moves every byte twice (read and write), so it is a loose bound for kernels that only
read. This times, per buffer size: the copy (bytes read + written), `torch.sum` over a bf16 buffer, and a
Triton kernel that streams the buffer and writes one float per program (several tile shapes; the best is
printed). Every size cycles through enough distinct buffers (at least 1 GiB in all) inside one CUDA graph
that no call finds its data in L2. Usage: `PYTHONPATH=. python benchmarks/read_bandwidth.py [--sizes-mb ...]`.
"""
from __future__ import annotations

import argparse
import itertools

import torch
import triton
import triton.language as tl
from triton.testing import do_bench_cudagraph


@triton.jit
def _stream_read(x_ptr, out_ptr, n, BLOCK: tl.constexpr, ITERS: tl.constexpr):
    pid = tl.program_id(0)
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for i in range(ITERS):
        offs = (pid.to(tl.int64) * ITERS + i) * BLOCK + tl.arange(0, BLOCK)
        acc += tl.load(x_ptr + offs, mask=offs < n, other=0.0).to(tl.float32)
    tl.store(out_ptr + pid, tl.sum(acc, axis=0))


def stream_read(x: torch.Tensor, out: torch.Tensor, block: int, iters: int, warps: int) -> None:
    grid = triton.cdiv(x.numel(), block * iters)
    _stream_read[(grid,)](x, out, x.numel(), BLOCK=block, ITERS=iters, num_warps=warps)


def timed_gbs(calls: list, bytes_per_call: int) -> float:
    """GB/s of the calls replayed back to back in one graph (each call its own buffer)."""
    ms = do_bench_cudagraph(lambda: [c() for c in calls], return_mode="median")
    return bytes_per_call * len(calls) / ms / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes-mb", default="8,32,50,117,235,1024", help="buffer sizes, MB (comma list)")
    args = ap.parse_args()
    props = torch.cuda.get_device_properties(0)
    print(f"device: {props.name} ({props.multi_processor_count} SMs, L2 {props.L2_cache_size >> 20} MiB); "
          f"torch {torch.__version__}; triton {triton.__version__}")
    print(f"{'MB':>6} {'copy r+w':>9} {'torch.sum':>10} {'triton read':>12}  best triton launch")
    for mb in (float(s) for s in args.sizes_mb.split(",")):
        n = int(mb * 1e6) // 2
        copies = max(2, -(-(1 << 30) // (2 * n)))
        bufs = [torch.randn(n, dtype=torch.bfloat16, device="cuda") for _ in range(copies)]
        dsts = [torch.empty_like(b) for b in bufs]
        copy = timed_gbs([lambda s=s, d=d: d.copy_(s) for s, d in zip(bufs, dsts)], 4 * n)
        del dsts
        summed = timed_gbs([lambda b=b: b.sum(dtype=torch.float32) for b in bufs], 2 * n)
        best = (0.0, "")
        for block, iters, warps in itertools.product((1024, 4096, 8192), (1, 4, 16), (4, 8)):
            out = torch.empty(triton.cdiv(n, block * iters), dtype=torch.float32, device="cuda")
            gbs = timed_gbs([lambda b=b: stream_read(b, out, block, iters, warps) for b in bufs], 2 * n)
            if block == 1024 and iters == 1 and warps == 4:  # correctness once per size
                stream_read(bufs[0], out, block, iters, warps)
                ref = bufs[0].float().view(-1)
                ref = torch.nn.functional.pad(ref, (0, out.numel() * block - n)).view(-1, block).sum(1)
                assert torch.allclose(out, ref, rtol=1e-3, atol=1e-2)
            best = max(best, (gbs, f"block {block} x {iters} iters, {warps} warps"))
        print(f"{mb:6.0f} {copy:9.0f} {summed:10.0f} {best[0]:12.0f}  {best[1]}", flush=True)
        del bufs


if __name__ == "__main__":
    main()
