"""Page copies between the device KV pool (L1) and the host pool (L2).

Backends: our JIT kernels (`tierlm.jit.kv_transfer.KVPageTransfer`, one launch per batch) or the torch
functions below, which have the signature of that module's one-shot functions:

    device_to_host(k_layers, v_layers, device_pages, host_buf, host_pages) -> None
    host_to_device(k_layers, v_layers, device_pages, host_buf, host_pages) -> None

`k_layers`/`v_layers`: the device pool's per-layer `[num_slots, kv_heads, head_dim]` tensors;
`device_pages`: int64 page ids on the pool's device; `host_buf`: the page-first host buffer
`[num_pages, layers, 2, page_size, kv_heads, head_dim]`; `host_pages`: int64 page ids on the CPU, paired
one to one with `device_pages`. Both run on the current CUDA stream and may return before the copy is done;
`PageTransfer` orders them against the compute stream and reports completion. When the JIT module is not
importable (not built, no CUDA), the torch implementation below is used.
"""
from __future__ import annotations

import importlib
import logging
from typing import Callable, Optional

import torch

from tierlm.kvcache.host_pool import HostKVPool
from tierlm.kvcache.pool import KVPool

logger = logging.getLogger(__name__)
PagesFn = Callable[[list, list], None]


def _slots(device_pages: torch.Tensor, page_size: int) -> torch.Tensor:
    offs = torch.arange(page_size, device=device_pages.device, dtype=torch.int64)
    return (device_pages[:, None] * page_size + offs).reshape(-1)


def _contiguous_run(host_pages: torch.Tensor) -> Optional[tuple[int, int]]:
    n = host_pages.numel()
    if n == 0:
        return None
    a = int(host_pages[0])
    return (a, a + n) if int(host_pages[-1]) == a + n - 1 and bool((host_pages.diff() == 1).all()) else None


def torch_device_to_host(k_layers: list, v_layers: list, device_pages: torch.Tensor, host_buf: torch.Tensor,
                         host_pages: torch.Tensor) -> None:
    """Gather the pages into a page-first staging tensor on the device, then one copy to the host
    (straight into the host buffer when the host pages are a contiguous run)."""
    n, ps = device_pages.numel(), host_buf.shape[3]
    if n == 0:
        return
    slots = _slots(device_pages, ps)
    staging = torch.empty((n, *host_buf.shape[1:]), dtype=host_buf.dtype, device=device_pages.device)
    for layer, (k, v) in enumerate(zip(k_layers, v_layers)):
        staging[:, layer, 0] = k.index_select(0, slots).view(n, ps, *k.shape[1:])
        staging[:, layer, 1] = v.index_select(0, slots).view(n, ps, *v.shape[1:])
    run = _contiguous_run(host_pages)
    if run is not None:
        host_buf[run[0]:run[1]].copy_(staging, non_blocking=True)
    else:
        host_buf.index_copy_(0, host_pages, staging.to("cpu"))


def torch_host_to_device(k_layers: list, v_layers: list, device_pages: torch.Tensor, host_buf: torch.Tensor,
                         host_pages: torch.Tensor) -> None:
    """One host-to-device copy of the pages (a pinned slice when contiguous), then a scatter per layer."""
    n, ps = device_pages.numel(), host_buf.shape[3]
    if n == 0:
        return
    run = _contiguous_run(host_pages)
    src = host_buf[run[0]:run[1]] if run is not None else host_buf.index_select(0, host_pages)
    staged = src.to(device_pages.device, non_blocking=run is not None)
    slots = _slots(device_pages, ps)
    for layer, (k, v) in enumerate(zip(k_layers, v_layers)):
        k.index_copy_(0, slots, staged[:, layer, 0].reshape(n * ps, *k.shape[1:]))
        v.index_copy_(0, slots, staged[:, layer, 1].reshape(n * ps, *v.shape[1:]))


def load_backend(name: str, device_pool: KVPool, host_pool: HostKVPool) -> tuple[str, PagesFn, PagesFn]:
    """(backend, d2h, h2d) for `--hicache-io-backend`, each `fn(device_pages, host_pages)` bound to the
    pools. 'auto' takes the JIT kernels on CUDA when they build, else torch; 'jit' insists on them."""
    k, v, buf = device_pool.k, device_pool.v, host_pool.buffer
    cuda = device_pool.device.type == "cuda"
    if name == "jit" or (name == "auto" and cuda):
        try:
            jit = importlib.import_module("tierlm.jit.kv_transfer")
            ok = jit.jit_available(device_pool.device)
        except Exception as e:  # noqa: BLE001 - any import/build failure means "not available"
            ok, why = False, e
        else:
            why = "the kernels did not build (see the log)"
        if ok:
            xfer = jit.KVPageTransfer(k, v, buf, backend="jit")
            return "jit", xfer.device_to_host, xfer.host_to_device
        if name == "jit":
            raise ValueError(f"--hicache-io-backend jit: the JIT page-transfer kernels are unavailable: {why}")
        logger.info("JIT page-transfer kernels unavailable (%s); using torch copies", why)
    dev = device_pool.device

    def d2h(device_pages: list[int], host_pages: list[int]) -> None:
        torch_device_to_host(k, v, torch.tensor(device_pages, dtype=torch.int64).to(dev, non_blocking=True), buf,
                             torch.tensor(host_pages, dtype=torch.int64))

    def h2d(device_pages: list[int], host_pages: list[int]) -> None:
        torch_host_to_device(k, v, torch.tensor(device_pages, dtype=torch.int64).to(dev, non_blocking=True), buf,
                             torch.tensor(host_pages, dtype=torch.int64))

    return "torch", d2h, h2d


class PageTransfer:
    """Runs page copies for one (device pool, host pool) pair with stream ordering on CUDA.

    `backup` (D2H) is called from the tier's I/O thread: it waits for the KV writes recorded in `event`
    on its own stream and returns when the host copy is complete. `load` (H2D) is called on the scheduler
    thread before a forward: it copies on a load stream and returns once the pages are on the device, so
    the host pages may be reused at once and any forward queued afterwards sees the KV. (The destination
    pages were free, so no queued forward reads them; the load need not wait for the compute stream.)
    """

    def __init__(self, device_pool: KVPool, host_pool: HostKVPool, backend: str = "auto") -> None:
        self.dev, self.host = device_pool, host_pool
        self.device = device_pool.device
        self.backend, self._d2h, self._h2d = load_backend(backend, device_pool, host_pool)
        cuda = self.device.type == "cuda"
        self._backup_stream = torch.cuda.Stream(self.device) if cuda else None
        self._load_stream = torch.cuda.Stream(self.device) if cuda else None

    def record(self) -> Optional["torch.cuda.Event"]:
        """An event after the work queued so far on the current stream (None on CPU)."""
        if self._backup_stream is None:
            return None
        ev = torch.cuda.Event()
        ev.record()
        return ev

    def backup(self, device_pages: list[int], host_pages: list[int], event: Optional["torch.cuda.Event"]) -> None:
        """Copy device pages to host pages; returns once the host bytes are final."""
        stream = self._backup_stream
        if stream is None:
            with torch.inference_mode():
                self._d2h(device_pages, host_pages)
            return
        with torch.cuda.stream(stream), torch.inference_mode():
            if event is not None:
                stream.wait_event(event)
            self._d2h(device_pages, host_pages)
        stream.synchronize()

    def load(self, host_pages: list[int], device_pages: list[int]) -> None:
        """Copy host pages into device pages; returns once the copy is complete."""
        stream = self._load_stream
        if stream is None:
            with torch.inference_mode():
                self._h2d(device_pages, host_pages)
            return
        with torch.cuda.stream(stream), torch.inference_mode():
            self._h2d(device_pages, host_pages)
        stream.synchronize()
