"""How much a device-to-host KV backup slows a prefill running beside it on the GPU.

A wave of prompts is backed up (device pool -> pinned host pool, `DmaPageCopier`: a gather kernel into a
device staging buffer, then DMA) while the next prefill computes; the gathers take SMs from the prefill's
GEMMs. This times a prefill-shaped GEMM chain (Llama-3.1-8B layer shapes, 8,192 tokens, 32 layers) alone
and with a backup of `--pages` pages queued beside it, for several staging sizes, gather grid caps,
stream priorities and gather kernels, against the default (runs of pages copied by DMA straight from the
pool), and checks every variant's host bytes against the device pages.

    python benchmarks/bench_backup_interference.py [--pages 512] [--reps 5]
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks.kv_pools import LAYERS, host_matches, llama8b_pools  # noqa: E402
from tierlm.kvcache.dma import DmaPageCopier  # noqa: E402

TOKENS, HIDDEN, MLP = 8192, 4096, 14336


def prefill_chain(x: torch.Tensor, w: list[torch.Tensor]) -> torch.Tensor:
    qkv, o, gu, d = w
    for _ in range(LAYERS):
        h = x @ qkv
        x = x + h[:, :HIDDEN] @ o
        g = x @ gu
        x = x + (torch.nn.functional.silu(g[:, :MLP]) * g[:, MLP:]) @ d
    return x


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pages", type=int, default=512, help="pages backed up beside one prefill")
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("needs a CUDA device")
        return 0
    dev = torch.device("cuda")
    pool, host = llama8b_pools(1800)
    gen = torch.Generator().manual_seed(0)
    # runs of 16 consecutive pages on both sides in random order, as the allocators hand out a busy pool's
    # pages (a finished prompt's pages are mostly such runs)
    runs = torch.randperm(1800 // 16, generator=gen)[: (args.pages + 15) // 16].tolist()
    dev_pages = [r * 16 + i for r in runs for i in range(16)][: args.pages]
    host_runs = torch.randperm(1800 // 16, generator=gen)[: len(runs)].tolist()
    host_pages = [r * 16 + i for r in host_runs for i in range(16)][: args.pages]
    x = torch.randn(TOKENS, HIDDEN, device=dev, dtype=torch.bfloat16) * 0.01
    w = [torch.randn(a, b, device=dev, dtype=torch.bfloat16) * 0.01
         for a, b in ((HIDDEN, 6144), (HIDDEN, HIDDEN), (HIDDEN, 2 * MLP), (MLP, HIDDEN))]
    lo, hi = torch.cuda.Stream.priority_range() if hasattr(torch.cuda.Stream, "priority_range") else (0, -1)
    # (name, staging MiB, gather grid cap, prefill on a high-priority stream, gather kernel, direct DMA from
    # runs of this many pages; 0: every page through the staging buffer)
    variants = [("prefill alone", None, 0, False, "jit", 0), ("direct DMA, runs >= 8", 32, 0, False, "jit", 8),
                ("staging 32 MiB, gather", 32, 0, False, "jit", 0),
                ("staging 128 MiB, gather", 128, 0, False, "jit", 0),
                ("staging 512 MiB, gather", 512, 0, False, "jit", 0),
                ("32 MiB, gather 8 blocks", 32, 8, False, "jit", 0),
                ("32 MiB, gather 32 blocks", 32, 32, False, "jit", 0),
                ("32 MiB, prefill high priority", 32, 0, True, "jit", 0),
                ("32 MiB, Triton gather", 32, 0, False, "triton", 0)]
    rows = []
    for name, staging, blocks, high, kernel, direct in variants:
        compute = torch.cuda.Stream(dev, priority=hi if high else 0)
        backup = torch.cuda.Stream(dev, priority=lo)
        copier = DmaPageCopier(pool.regions(), pool.layer_sizes, host.buffer, staging_bytes=(staging or 32) << 20,
                               max_blocks=blocks, kernel=kernel, direct_min_pages=direct)
        times, copies = [], []
        host.buffer[host_pages] = 0  # what the variant's copies must fill in again
        for rep in range(args.reps + 1):
            torch.cuda.synchronize()
            s0, s1, b1 = (torch.cuda.Event(enable_timing=True) for _ in range(3))
            with torch.cuda.stream(compute):
                s0.record()
                mark = compute.record_event()
                y = prefill_chain(x, w)
                s1.record()
            if staging is not None:
                with torch.cuda.stream(backup):
                    backup.wait_event(mark)
                    copier.device_to_host(dev_pages, host_pages)
                    b1.record()
            torch.cuda.synchronize()
            if rep:  # the first one warms up
                times.append(s0.elapsed_time(s1))
                copies.append(s0.elapsed_time(b1) if staging is not None else 0.0)
        del y
        ok = staging is None or host_matches(pool, host, list(zip(dev_pages, host_pages))[:: max(1, args.pages // 16)])
        rows.append((name, statistics.median(times), min(times), statistics.median(copies), ok))
    base = rows[0][1]
    mb = args.pages * host.bytes_per_page / 1e6
    print(f"\n{args.pages} pages ({mb:.0f} MB) backed up beside an 8,192-token prefill-shaped GEMM chain; "
          f"{args.reps} reps, stream priorities {lo}..{hi}")
    print(f"{'variant':<32}{'prefill ms':>11}{'min':>8}{'vs alone':>10}{'backup done ms':>16}  bytes")
    for name, med, mn, cp, ok in rows:
        print(f"{name:<32}{med:>11.2f}{mn:>8.2f}{med / base:>10.4f}{cp:>16.1f}  {'ok' if ok else 'WRONG'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
