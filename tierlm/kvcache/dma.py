"""`DmaPageCopier`: page copies between the device pool and the pinned host pool on the GPU's copy engine.

The zero-copy JIT kernel moves pages over PCIe with SM threads, so for the whole transfer (milliseconds
for a long prompt) those SMs sit waiting on PCIe instead of running the model. Here the PCIe part is a
`cudaMemcpyAsync` per contiguous run of host pages (DMA: no SM time at all), and the SM part is a
device-to-device gather/scatter between the pool's scattered pages and a small device staging buffer of
the host layout, which runs at HBM speed (a few percent of the DMA time).

A backup runs gather(chunk) -> DMA(chunk) for chunks of `staging_pages` pages, and a load DMA(chunk) ->
scatter(chunk), all on the caller's current stream, so chunk i+1 never overwrites the staging buffer
before chunk i has left it. Pages are sorted by host id first, so that runs are as long as the host
allocator made them. A backup's runs of pages consecutive on both sides skip the staging: one strided DMA
per run and region straight from the pool, no SM time at all. Not thread-safe: one copier per stream.
"""
from __future__ import annotations

import contextlib
import functools
import logging
from typing import Iterator, Optional, Sequence

import torch

from tierlm.jit.kv_transfer import KVPageTransfer

logger = logging.getLogger(__name__)


def host_runs(host_pages: Sequence[int]) -> list[tuple[int, int, int]]:
    """(index of the first page, first host page, length) of each run of consecutive host ids."""
    runs: list[tuple[int, int, int]] = []
    for i, h in enumerate(host_pages):
        if runs and runs[-1][1] + runs[-1][2] == h:
            start, first, n = runs[-1]
            runs[-1] = (start, first, n + 1)
        else:
            runs.append((i, h, 1))
    return runs


def host_sorted_chunks(device_pages: Sequence[int], host_pages: Sequence[int],
                       size: int) -> Iterator[tuple[list[int], list[int]]]:
    """(device pages, host pages) in chunks of at most `size` pairs, sorted by host page so that each chunk's
    host pages form as few runs as the allocator allows."""
    if len(device_pages) != len(host_pages):
        raise ValueError(f"{len(device_pages)} device pages but {len(host_pages)} host pages")
    pairs = sorted(zip(host_pages, device_pages))
    for c in range(0, len(pairs), size):
        chunk = pairs[c:c + size]
        yield [d for _, d in chunk], [h for h, _ in chunk]


def page_mover(kernel: str, regions: Sequence[torch.Tensor], host_buf: torch.Tensor,
               layer_sizes: Optional[Sequence[int]] = None, max_blocks: int = 0, **tuning: int) -> KVPageTransfer:
    """The page copier of `kernel`: "jit" (our CUDA/C++ kernels; `tuning`: their unroll and blocks per SM),
    "triton" (the same copies as a Triton kernel, where ours cannot build) or "torch" (indexing,
    synchronous)."""
    if kernel == "triton":
        from tierlm.kernels.kv_pages import TritonPageTransfer

        return TritonPageTransfer(regions, host_buf, layer_sizes, max_blocks=max_blocks)
    return KVPageTransfer(regions, host_buf, layer_sizes, kernel, max_blocks=max_blocks,  # type: ignore[arg-type]
                          **tuning)


def joint_runs(device_pages: Sequence[int], host_pages: Sequence[int]) -> list[tuple[int, int, int]]:
    """(first device page, first host page, length) of each run of pairs consecutive on both sides, in host
    order."""
    if len(device_pages) != len(host_pages):
        raise ValueError(f"{len(device_pages)} device pages but {len(host_pages)} host pages")
    runs: list[tuple[int, int, int]] = []
    for h, d in sorted(zip(host_pages, device_pages)):
        if runs and runs[-1][0] + runs[-1][2] == d and runs[-1][1] + runs[-1][2] == h:
            runs[-1] = (runs[-1][0], runs[-1][1], runs[-1][2] + 1)
        else:
            runs.append((d, h, 1))
    return runs


def direct_dma_fault(d2h, device: torch.device) -> Optional[str]:
    """Run the direct page DMA `d2h` once on scratch pools of `device` and check the bytes against the
    layout; None when right, else what went wrong. Cheap (a few KiB, one synchronisation), so each copier
    proves the path on its own device before any backup relies on it."""
    regions = [torch.randint(0, 256, (4, 64 * (r + 1)), dtype=torch.uint8, device=device) for r in range(3)]
    page_bytes = sum(t.shape[1] for t in regions)
    host = torch.zeros((3, page_bytes), dtype=torch.uint8)
    cuda = device.type == "cuda"
    if cuda:
        host = host.pin_memory()
    table = KVPageTransfer(regions, host, backend="torch").region_table
    runs = torch.tensor([[1, 0, 2]], dtype=torch.int64)  # device pages 1-2 to host pages 0-1
    if cuda:
        with torch.cuda.device(device):
            d2h(regions[0], table, host, runs)
            torch.cuda.current_stream().synchronize()
    else:
        d2h(regions[0], table, host, runs)
    want = torch.stack([torch.cat([t[p].cpu() for t in regions]) for p in (1, 2)])
    if torch.equal(host[:2], want) and not host[2].any():
        return None
    return "its bytes differ from the pool's in a self-check"


def mover_fault(kernel: str, device: torch.device) -> Optional[str]:
    """Copy scratch pages of `device` to host pages and back with `page_mover(kernel)` and check them against
    torch indexing; None when right, else what went wrong (a kernel that compiles differently on this
    machine than the tests saw must not reach the tiers' bytes)."""
    cuda = device.type == "cuda"
    regions = [torch.randint(0, 256, (5, 64 * (r + 1)), dtype=torch.uint8, device=device) for r in range(4)]
    host, ref_host = (torch.zeros((4, sum(t.shape[1] for t in regions)), dtype=torch.uint8) for _ in range(2))
    if cuda:  # a CUDA pool's host pool is pinned (the movers refuse pageable memory)
        host, ref_host = host.pin_memory(), ref_host.pin_memory()
    back = [torch.zeros_like(t) for t in regions]
    with torch.cuda.device(device) if cuda else contextlib.nullcontext():
        page_mover(kernel, regions, host, [2, 2]).device_to_host([3, 1, 4], [0, 2, 3])
        page_mover(kernel, back, host, [2, 2]).host_to_device([4, 0], [0, 3], layers=range(1, 2))
        if cuda:
            torch.cuda.synchronize(device)
    KVPageTransfer(regions, ref_host, [2, 2], "torch").device_to_host([3, 1, 4], [0, 2, 3])
    ref_back = [torch.zeros_like(t) for t in regions]
    KVPageTransfer(ref_back, ref_host, [2, 2], "torch").host_to_device([4, 0], [0, 3], layers=range(1, 2))
    if torch.equal(host, ref_host) and all(torch.equal(a, b) for a, b in zip(back, ref_back)):
        return None
    return f"the {kernel} page copies differ from torch indexing in a self-check"


# A backup's run of pages consecutive on both sides this long goes by DMA from the pool. A strided DMA per run
# and region costs the host far more per page for short runs than the staging's gather does, and backups
# are queued on the scheduler's thread, sometimes right before a step the device waits for
# (`benchmarks/bench_backup_host_cost.py`); only long runs are cheaper that way on both sides.
DIRECT_MIN_PAGES = 128


class DmaPageCopier:
    """Copies device pages <-> host pages through a device staging buffer of `staging_bytes` (at least
    one page); the gather/scatter `kernel` ("jit" or "triton", see `page_mover`) runs with at most
    `max_blocks` blocks (0: the kernel default). `regions`/`layer_sizes`/`host_buf` as for `KVPageTransfer`.

    Device to host, runs of at least `direct_min_pages` pages consecutive on both sides (most of a
    finished prompt's pages: the allocators hand pages out sorted) skip the staging: one strided DMA per
    run and region straight from the pool (`kv_pages_d2h_dma`), so those bytes cost the model running
    beside the backup no SM time at all (the gather reads and writes every byte once more). 0: never;
    only on CUDA with our JIT modules."""

    def __init__(self, regions: Sequence[torch.Tensor], layer_sizes: Sequence[int], host_buf: torch.Tensor,
                 staging_bytes: int = 32 << 20, max_blocks: int = 0, kernel: str = "jit",
                 direct_min_pages: int = DIRECT_MIN_PAGES) -> None:
        page_bytes = host_buf.shape[1]
        pages = max(1, min(host_buf.shape[0], staging_bytes // page_bytes))
        self.host_buf = host_buf
        self.staging = torch.empty((pages, page_bytes), dtype=torch.uint8, device=regions[0].device)
        self.staging_pages = pages
        self._kernel = page_mover(kernel, regions, self.staging, layer_sizes, max_blocks)
        self._region0 = regions[0]
        self._table = self._kernel.region_table
        self.pages_direct = self.pages_staged = 0  # pages backed up by each path (for /stats)
        self.direct_min_pages = direct_min_pages if kernel == "jit" and regions[0].is_cuda else 0
        self._direct = None
        if self.direct_min_pages > 0:
            try:
                self._direct = _layer_dma_module().d2h
                why = direct_dma_fault(self._direct, regions[0].device)
            except Exception as e:  # noqa: BLE001 - its module did not build: every page goes by the staging
                why = f"{type(e).__name__}: {e}"
            if why is not None:
                logger.warning("direct page DMA unavailable (%s); backups go through the staging buffer", why)
                self._direct, self.direct_min_pages = None, 0

    def device_to_host(self, device_pages: Sequence[int], host_pages: Sequence[int]) -> None:
        """Queue the copy of `device_pages[i]` into host page `host_pages[i]` on the current stream."""
        if self._direct is not None:
            runs = joint_runs(device_pages, host_pages)
            direct = [r for r in runs if r[2] >= self.direct_min_pages]
            if direct:
                self._direct(self._region0, self._table, self.host_buf, torch.tensor(direct, dtype=torch.int64))
                self.pages_direct += sum(n for _, _, n in direct)
                staged = [(d + i, h + i) for d, h, n in runs if n < self.direct_min_pages for i in range(n)]
                device_pages, host_pages = [d for d, _ in staged], [h for _, h in staged]
        self.pages_staged += len(device_pages)
        for dev, host in host_sorted_chunks(device_pages, host_pages, self.staging_pages):
            self._kernel.device_to_host(dev, list(range(len(dev))))
            for i, h, n in host_runs(host):
                self.host_buf[h:h + n].copy_(self.staging[i:i + n], non_blocking=True)

    def host_to_device(self, device_pages: Sequence[int], host_pages: Sequence[int]) -> None:
        """Queue the copy of host page `host_pages[i]` into `device_pages[i]` on the current stream."""
        for dev, host in host_sorted_chunks(device_pages, host_pages, self.staging_pages):
            for i, h, n in host_runs(host):
                self.staging[i:i + n].copy_(self.host_buf[h:h + n], non_blocking=True)
            self._kernel.host_to_device(dev, list(range(len(dev))))


@functools.lru_cache(maxsize=None)
def _layer_dma_module():
    from tierlm.jit.loader import load_jit

    return load_jit("kv_layer_dma", cuda_files=["kv_layer_dma.cuh"],
                    cuda_wrappers=[("h2d", "tierlm_kernels::kv_layer_h2d_dma"),
                                   ("d2h", "tierlm_kernels::kv_pages_d2h_dma")])


class LayerwiseDmaLoader:
    """Host-to-device loads in layer order on the copy engine, so a forward can start on layer l while
    later layers are still on their way.

    Per layer (and per chunk of `staging_bytes`): one strided DMA per run of host pages into a staging
    buffer on `copy_stream`, then a device-side scatter into the pool's pages on `scatter_stream`. Two
    staging buffers alternate, so the DMA of step i+1 overlaps the scatter of step i; an event per buffer
    keeps a DMA from overwriting a buffer whose scatter has not run yet (also across calls).
    """

    def __init__(self, regions: Sequence[torch.Tensor], layer_sizes: Sequence[int], host_buf: torch.Tensor,
                 copy_stream: "torch.cuda.Stream", scatter_stream: "torch.cuda.Stream",
                 staging_bytes: int = 32 << 20) -> None:
        first = [0]
        for n in layer_sizes:
            first.append(first[-1] + n)
        sizes = [sum(t.shape[1] for t in regions[first[i]:first[i + 1]]) for i in range(len(layer_sizes))]
        self.layer_bytes = sizes
        self.layer_offsets = [sum(sizes[:i]) for i in range(len(sizes))]
        widest = max(sizes)
        self.pages = max(1, min(host_buf.shape[0], staging_bytes // widest))
        device = regions[0].device
        self.host_buf, self.copy_stream, self.scatter_stream = host_buf, copy_stream, scatter_stream
        flat = [torch.empty(self.pages * widest, dtype=torch.uint8, device=device) for _ in range(2)]
        # staging[b][l]: buffer b seen as a one-layer "host" pool of layer l's bytes
        self.staging = [[buf[:self.pages * n].view(self.pages, n) for n in sizes] for buf in flat]
        self._scatter = [[KVPageTransfer(regions[first[layer]:first[layer + 1]], views[layer], None, "jit")
                          for layer in range(len(sizes))] for views in self.staging]
        self._free = [None, None]  # per buffer: event after the last scatter that read it
        self._step = 0
        self._dma = _layer_dma_module().h2d

    def load(self, device_pages: Sequence[int], host_pages: Sequence[int],
             start: Optional["torch.cuda.Event"] = None,
             after: Optional["torch.cuda.Event"] = None) -> list["torch.cuda.Event"]:
        """Queue the copy; returns one event per layer, recorded on `scatter_stream` once that layer is in.
        `start` (a timing event) is recorded on `copy_stream` just before the first DMA, which waits for
        `after` when given."""
        chunks = []
        for dev, host in host_sorted_chunks(device_pages, host_pages, self.pages):
            runs = torch.tensor([list(r) for r in host_runs(host)], dtype=torch.int64)
            ids = self._scatter[0][0].page_ids(dev, list(range(len(dev))))
            chunks.append((runs, ids))
        events = []
        if after is not None:
            self.copy_stream.wait_event(after)
        for layer in range(len(self._scatter[0])):
            for runs, ids in chunks:
                b = self._step % 2
                self._step += 1
                with torch.cuda.stream(self.copy_stream):
                    if self._free[b] is not None:
                        self.copy_stream.wait_event(self._free[b])
                    if start is not None:
                        start.record(self.copy_stream)
                        start = None
                    self._dma(self.staging[b][layer], self.host_buf, runs, self.layer_offsets[layer])
                    arrived = self.copy_stream.record_event()
                with torch.cuda.stream(self.scatter_stream):
                    self.scatter_stream.wait_event(arrived)
                    self._scatter[b][layer].copy(ids, False)
                    self._free[b] = self.scatter_stream.record_event()
            events.append(self._free[(self._step - 1) % 2])
        return events
