"""GPU benchmark of the host<->device KV page paths as the engine uses them, alone and beside compute.

For a Llama-3.1-8B-shaped pool (32 layers, 8 KV heads, head_dim 128, bf16, 16-token pages = 2 MiB per
page) it times, for a batch of pages:
  - the pinned-memory copy (one contiguous cudaMemcpyAsync: the bandwidth ceiling),
  - backups (D2H): the zero-copy kernel with its full grid and with capped grids, and DMA through staging;
  - loads (H2D): the kernel whole, layer by layer with capped grids (the engine's `jit` loads), DMA, and
    DMA layer by layer (the engine's `dma` loads);
and then each variant running on a side stream (the layer-wise loads also on a high-priority one) while
the default stream runs prefill-sized GEMMs,
reporting how much slower the GEMMs get (the cost a transfer imposes on the model) and the bandwidth
the transfer still reaches. Checks every variant's bytes against torch first. Prints a table last.
Usage: `PYTHONPATH=. python benchmarks/bench_kv_io.py [--pages N]` from the repo root; needs CUDA.
"""
from __future__ import annotations

import argparse

import torch

from benchmarks.timing import gqa_bytes, gqa_transfer, median_seconds
from tierlm.kvcache.dma import DmaPageCopier, LayerwiseDmaLoader

LAYERS, KV_HEADS, HEAD_DIM, PAGE = 32, 8, 128, 16
DTYPE = torch.bfloat16


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", type=int, default=256, help="pages per batch (2 MiB each)")
    args = ap.parse_args()
    n = args.pages
    dev_pages, host_pages = 4 * n, 2 * n
    k = [torch.randn((dev_pages * PAGE, KV_HEADS, HEAD_DIM), device="cuda", dtype=DTYPE) for _ in range(LAYERS)]
    v = [torch.randn((dev_pages * PAGE, KV_HEADS, HEAD_DIM), device="cuda", dtype=DTYPE) for _ in range(LAYERS)]
    host = torch.empty((host_pages, LAYERS, 2, PAGE, KV_HEADS, HEAD_DIM), dtype=DTYPE, pin_memory=True)
    host.copy_(torch.randn(host.shape, dtype=torch.float32).to(DTYPE))
    page_bytes = host[0].numel() * host.element_size()
    nbytes = n * page_bytes
    g = torch.Generator().manual_seed(0)
    dev_ids = torch.randperm(dev_pages, generator=g)[:n].tolist()
    host_ids = sorted(torch.randperm(host_pages, generator=g)[:n].tolist())
    print(f"device: {torch.cuda.get_device_name()} ({torch.cuda.get_device_properties(0).multi_processor_count} "
          f"SMs); torch {torch.__version__}; batch {n} pages x {page_bytes >> 20} MiB = {nbytes / 2**30:.2f} GiB")

    dense = torch.empty((n, *host.shape[1:]), dtype=DTYPE, device="cuda")
    pinned = host[:n]
    ceiling = {"d2h": nbytes / median_seconds(lambda: pinned.copy_(dense, non_blocking=True)),
               "h2d": nbytes / median_seconds(lambda: dense.copy_(pinned, non_blocking=True))}
    print(f"pinned copy: D2H {ceiling['d2h'] / 1e9:.1f} GB/s, H2D {ceiling['h2d'] / 1e9:.1f} GB/s")

    regions, host_b, sizes = gqa_bytes(k, v, host)
    dma = DmaPageCopier(regions, sizes, host_b)
    ref = gqa_transfer(k, v, host, "torch")
    variants = {}

    def kernel(to_host: bool, max_blocks: int, layered: bool):
        t = gqa_transfer(k, v, host, "jit", max_blocks=max_blocks)
        ids = t.page_ids(dev_ids, host_ids)

        def run():
            if layered:
                for layer in range(LAYERS):
                    t.copy(ids, to_host, range(layer, layer + 1))
            else:
                t.copy(ids, to_host)
        return run

    variants["d2h kernel full grid"] = ("d2h", kernel(True, 0, False))
    for cap in (16, 32, 64):
        variants[f"d2h kernel {cap} blocks"] = ("d2h", kernel(True, cap, False))
    variants["d2h dma (staging 32 MiB)"] = ("d2h", lambda: dma.device_to_host(dev_ids, host_ids))
    variants["h2d kernel full grid"] = ("h2d", kernel(False, 0, False))
    for cap in (16, 32, 64, 132):
        variants[f"h2d kernel layered {cap} blocks"] = ("h2d", kernel(False, cap, True))
    variants["h2d dma (staging 32 MiB)"] = ("h2d", lambda: dma.host_to_device(dev_ids, host_ids))
    copy_stream, scatter_stream = torch.cuda.Stream(), torch.cuda.Stream()
    loader = LayerwiseDmaLoader(regions, sizes, host_b, copy_stream, scatter_stream)

    def layered_dma():  # ordered after the current stream's work, joined back into it
        cur = torch.cuda.current_stream()
        scatter_stream.wait_stream(cur)
        with torch.cuda.stream(scatter_stream):
            events = loader.load(dev_ids, host_ids)
        cur.wait_event(events[-1])

    variants["h2d dma layered (engine 'dma')"] = ("h2d", layered_dma)

    # correctness: each variant against the torch reference
    saved = [t.clone() for t in k + v]
    for name, (kind, fn) in variants.items():
        if kind == "d2h":
            host[host_ids] = 0
            fn()
            torch.cuda.synchronize()
            got = host[host_ids].clone()
            ref.device_to_host(dev_ids, host_ids)
            ok = torch.equal(got, host[host_ids])
        else:
            for t in k + v:
                t.view(dev_pages, -1)[dev_ids] = 0
            fn()
            torch.cuda.synchronize()
            ok = all(torch.equal(a.view(dev_pages, -1)[dev_ids], b.view(dev_pages, -1)[dev_ids])
                     for a, b in zip(k + v, saved))
            for a, b in zip(k + v, saved):
                a.copy_(b)
        assert ok, f"{name}: wrong bytes"
    print(f"all {len(variants)} variants copy the right bytes")

    # interference: prefill-sized GEMMs on the default stream, a transfer looping on a side stream
    x = torch.randn(8192, 4096, device="cuda", dtype=DTYPE)
    w = torch.randn(4096, 14336, device="cuda", dtype=DTYPE)
    gemms = 40

    def compute():
        for _ in range(gemms):
            torch.matmul(x, w)

    alone = median_seconds(compute, 3)
    low, high = torch.cuda.Stream(), torch.cuda.Stream(priority=-1)
    runs = [(name, kind, fn, low) for name, (kind, fn) in variants.items()]
    runs += [(f"{name} hi-prio", kind, fn, high) for name, (kind, fn) in variants.items() if "layered" in name]
    rows = []
    for name, kind, fn, side in runs:
        solo = median_seconds(fn)
        reps = max(1, int(alone / solo) + 1)  # keep the side stream busy for the whole compute window
        torch.cuda.synchronize()
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        xa, xb = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            xa.record()
            for _ in range(reps):
                fn()
            xb.record()
        start.record()
        compute()
        stop.record()
        torch.cuda.synchronize()
        busy = start.elapsed_time(stop) / 1e3
        concurrent_bw = reps * nbytes / (xa.elapsed_time(xb) / 1e3)
        rows.append((name, nbytes / solo / 1e9, 100 * nbytes / solo / ceiling[kind], busy, concurrent_bw / 1e9))
    again = median_seconds(compute, 3)
    base = min(alone, again)  # the first figure can be taken before the clocks settle
    rows = [(name, bw, pct, 100 * (busy / base - 1), cbw) for name, bw, pct, busy, cbw in rows]

    print(f"\ncompute alone: {gemms} GEMMs 8192x4096x14336 bf16 in {alone * 1e3:.1f} ms (first), "
          f"{again * 1e3:.1f} ms (last); slowdowns are against the faster")
    print(f"{'variant':<40}{'GB/s':>8}{'% pinned':>10}{'GEMM slowdown':>15}{'GB/s beside GEMMs':>19}")
    for name, bw, pct, slow, cbw in rows:
        print(f"{name:<40}{bw:>8.1f}{pct:>9.1f}%{slow:>14.1f}%{cbw:>19.1f}")


if __name__ == "__main__":
    main()
