"""Host time of queueing one wave's device-to-host KV backup, by path and by run length.

A backup is queued on the scheduler's thread, and where the device waits for the next step (the gap
between one wave of requests and the next) every millisecond of that host work delays the step. This
queues a backup of `--pages` pages of the Llama-3.1-8B KV shape (32 layers, 8 KV heads of 128, pages of
16 tokens: 64 regions of 32 KiB per page) with the pages in runs consecutive on both sides of several
lengths, and reports the host milliseconds of the call (nothing waited for) and the device milliseconds
until the copy is done, for: runs copied by DMA straight from the pool (one strided DMA per run and
region, the default for runs of 8 pages or more), every page through the staging buffer (gather kernel
+ DMA), and the Triton gather. Every variant's host bytes are checked against the device pages.

    python benchmarks/bench_backup_host_cost.py [--pages 1664] [--reps 5]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks.kv_pools import host_matches, llama8b_pools  # noqa: E402
from tierlm.kvcache.dma import DmaPageCopier  # noqa: E402


def paired_runs(n_pages: int, run: int, total: int, gen: torch.Generator) -> tuple[list[int], list[int]]:
    """`n_pages` (device, host) pairs in runs of `run` pages consecutive on both sides, runs in random order."""
    slots = total // run
    d = torch.randperm(slots, generator=gen)[: -(-n_pages // run)].tolist()
    h = torch.randperm(slots, generator=gen)[: len(d)].tolist()
    dev = [r * run + i for r in d for i in range(run)][:n_pages]
    host = [r * run + i for r in h for i in range(run)][:n_pages]
    return dev, host


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pages", type=int, default=1664, help="pages of one backup (a wave of 8 prompts of 3,300)")
    p.add_argument("--runs", type=int, nargs="+", default=[1, 8, 32, 128])
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("needs a CUDA device")
        return 0
    total = 2 * args.pages
    pool, host = llama8b_pools(total)
    gen = torch.Generator().manual_seed(0)
    stream = torch.cuda.Stream(pool.device)
    variants = [("direct DMA from the pool (runs >= 8)", "jit", 8), ("staging + JIT gather", "jit", 0),
                ("staging + Triton gather", "triton", 0)]
    rows = []
    for run in args.runs:
        dev_pages, host_pages = paired_runs(args.pages, run, total, gen)
        for name, kernel, direct in variants:
            copier = DmaPageCopier(pool.regions(), pool.layer_sizes, host.buffer, kernel=kernel,
                                   direct_min_pages=direct)
            host_ms, dev_ms = [], []
            for rep in range(args.reps + 1):
                host.buffer.zero_()
                torch.cuda.synchronize()
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                with torch.cuda.stream(stream):
                    start.record(stream)
                    t0 = time.perf_counter()
                    copier.device_to_host(dev_pages, host_pages)
                    t1 = time.perf_counter()
                    end.record(stream)
                end.synchronize()
                if rep:  # the first call builds and warms up
                    host_ms.append((t1 - t0) * 1e3)
                    dev_ms.append(start.elapsed_time(end))
            ok = host_matches(pool, host, [(dev_pages[i], host_pages[i]) for i in (0, len(dev_pages) // 2, -1)])
            rows.append((run, name, statistics.median(host_ms), statistics.median(dev_ms), ok))
            del copier
    gib = args.pages * host.bytes_per_page / 2**30
    print(f"\none backup of {args.pages} pages ({gib:.2f} GiB), Llama-3.1-8B KV shape, median of {args.reps}")
    print(f"{'run':>4}  {'path':<38} {'host ms':>8} {'device ms':>10} {'GB/s':>6}  bytes")
    for run, name, h, d, ok in rows:
        print(f"{run:>4}  {name:<38} {h:>8.2f} {d:>10.2f} {gib * 1.0737 / (d / 1e3):>6.1f}  {'ok' if ok else 'WRONG'}")
    return 0 if all(r[-1] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
