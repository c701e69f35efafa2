"""Page copies between the device KV pool (L1) and the host pool (L2), ordered against the model's stream.

Backups always go by DMA (`tierlm.kvcache.dma`): runs of pages consecutive on both sides straight from the
pool, the rest through a small staging buffer, so a backup running beside the model costs it little or no
SM time. Loads are queued layer by layer and the forward waits for layer l's
event just before layer l, so they overlap the prefill that needs them; `--hicache-io-backend` picks how:
- `jit`: the zero-copy kernel (`tierlm.jit.kv_transfer`), one launch per layer with a capped grid. Its few
  blocks slip in beside a busy prefill: the best TTFT when the step has much compute to hide the load.
- `dma`: per layer one strided DMA per run of host pages into a staging buffer, then a short scatter into
  the pool (`LayerwiseDmaLoader`): the full copy-engine bandwidth, but each scatter waits for free SMs.
- `auto` (CUDA, kernels built): per step, `jit` when the step's prefill has at least `OVERLAP_TOKENS` new
  tokens to overlap, else `dma` (a load with little compute beside it is bound by bandwidth).
- `triton`: as `jit`, with the copy kernel (and the backups' gather) written in Triton
  (`tierlm.kernels.kv_pages`); `auto` picks it on CUDA where our JIT kernels cannot build (no CUDA
  toolkit beside the installed torch), since the synchronous torch copies make the tiers slower than none.
- `torch`: torch indexing, synchronous (CPU pools); on CPU `auto` picks it.
"""
from __future__ import annotations

import importlib
import logging
import time
from typing import Callable, Optional

import torch

from tierlm.kvcache.host_pool import HostKVPool
from tierlm.kvcache.pool import KVPool

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "jit", "dma", "triton", "torch")
LOAD_MAX_BLOCKS = 32  # grid cap of a layer-wise load kernel: enough for PCIe, leaves the model most SMs
OVERLAP_TOKENS = 1024  # `auto`: new prefill tokens in the step from which loads go by the kernel


def choose_backend(name: str, cuda: bool, jit_missing: Callable[[], Optional[str]],
                   triton_missing: Callable[[], Optional[str]]) -> str:
    """The backend `name` stands for (see the module doc); `jit_missing()` / `triton_missing()` say why our JIT
    kernels / the Triton copy kernel cannot run here (None: they can), asked only when it matters. Raises
    ValueError naming the flag when `name` cannot run."""
    if name not in BACKENDS:
        raise ValueError(f"--hicache-io-backend: unknown backend {name!r} (choose from {', '.join(BACKENDS)})")
    if name == "torch" or (name == "auto" and not cuda):
        return "torch"
    if name == "dma" and not cuda:
        raise ValueError("--hicache-io-backend dma: copy-engine transfers need a CUDA device")
    if name == "triton":
        why = triton_missing() if cuda else "it needs a CUDA device"
        if why is not None:
            raise ValueError(f"--hicache-io-backend triton: the Triton copy kernel cannot run: {why}")
        return name
    why = jit_missing()
    if why is None:
        return name
    if name != "auto":
        raise ValueError(f"--hicache-io-backend {name}: the JIT page-transfer kernels are unavailable: {why}")
    if triton_missing() is None:  # the same copies, asynchronous, as a Triton kernel
        logger.warning("KV tiers: the JIT page-transfer kernels are unavailable (%s); copying with the Triton "
                       "kernel instead", why)
        return "triton"
    logger.warning("KV tiers: the JIT page-transfer kernels are unavailable (%s) and so is Triton; copying with "
                   "torch, synchronously, which can serve slower than without --enable-hicache", why)
    return "torch"


def resolve_backend(name: str, device: torch.device) -> str:
    """The backend `name` stands for on `device` (`choose_backend`, with what this machine can run)."""

    def jit_missing() -> Optional[str]:
        try:
            jit = importlib.import_module("tierlm.jit.kv_transfer")
            return None if jit.jit_available(device) else "the kernels did not build (see the log)"
        except Exception as e:  # noqa: BLE001 - any import/build failure means "not available"
            return str(e) or type(e).__name__

    def triton_missing() -> Optional[str]:  # proven on this device before it moves the tiers' bytes
        try:
            importlib.import_module("tierlm.kernels.kv_pages")
        except Exception as e:  # noqa: BLE001 - no Triton (or no GPU backend in it)
            return str(e) or type(e).__name__
        from tierlm.kvcache.dma import mover_fault

        try:
            return mover_fault("triton", device)
        except Exception as e:  # noqa: BLE001 - it did not compile or launch here
            return f"it failed a self-check: {type(e).__name__}: {e}"

    return choose_backend(name, device.type == "cuda", jit_missing, triton_missing)


class LayerLoads:
    """The handle a forward waits on: layer l's loaded pages are in once `wait(l)` returns on the compute
    stream (the wait is queued on the device, the host does not block)."""

    def __init__(self, events: list["torch.cuda.Event"]) -> None:
        self.events = events

    def wait(self, layer: int) -> None:
        torch.cuda.current_stream().wait_event(self.events[layer])

    def wait_all(self) -> None:
        torch.cuda.current_stream().wait_event(self.events[-1])


class PageTransfer:
    """Runs page copies for one (device pool, host pool) pair.

    `queue_backup` (D2H) is called on the scheduler thread, in step order: on CUDA it queues the copy on a
    backup stream after the forwards queued so far, and the tier's I/O thread only waits for its event, so
    a later step that reuses the device pages (or loads the host pages back) can be ordered after the
    copy on the device instead of the scheduler waiting for it (`TierIO.backups_fence`); synchronous
    backends copy in `backup`, on the I/O thread. `start_load` (H2D) is called on the scheduler thread: on
    CUDA it queues the copy on a load stream, after everything queued so far on the compute stream (a
    destination page may have been freed by a request whose last forward is still queued), and returns one
    event per layer for the forward that reads the pages; the host pages stay untouched meanwhile because
    the nodes that own them are locked by the loading requests.
    """

    def __init__(self, device_pool: KVPool, host_pool: HostKVPool, backend: str = "auto",
                 load_max_blocks: int = LOAD_MAX_BLOCKS) -> None:
        from tierlm.kvcache.dma import page_mover

        self.dev, self.host = device_pool, host_pool
        self.device = device_pool.device
        self.num_layers = device_pool.num_layers
        self.backend = resolve_backend(backend, self.device)
        regions, sizes, buf = device_pool.regions(), device_pool.layer_sizes, host_pool.buffer
        self.kernel = self.backend if self.backend in ("torch", "triton") else "jit"  # what moves the bytes
        self._kernel = page_mover(self.kernel, regions, buf, sizes, load_max_blocks)
        cuda = self.device.type == "cuda" and self.backend != "torch"
        self._backup_stream = torch.cuda.Stream(self.device) if cuda else None
        # loads run at high priority: their few blocks take SMs as soon as the prefill frees any
        self._load_stream = torch.cuda.Stream(self.device, priority=-1) if cuda else None
        self._backup_dma = self._load_dma = None
        if cuda:
            from tierlm.kvcache.dma import DmaPageCopier, LayerwiseDmaLoader

            self._backup_dma = DmaPageCopier(regions, sizes, buf, kernel=self.kernel)
            if self.backend in ("dma", "auto"):
                try:
                    self._load_dma = LayerwiseDmaLoader(regions, sizes, buf, torch.cuda.Stream(self.device),
                                                       self._load_stream)
                except Exception as e:  # noqa: BLE001 - its JIT module did not build
                    if self.backend == "dma":
                        raise ValueError(f"--hicache-io-backend dma: the layer DMA module is unavailable: {e}") from e
                    logger.warning("layer-wise DMA loads unavailable (%s); loading with the copy kernel", e)
                    self.backend = "jit"
        # queued loads: (first copy, load stream free of the compute queued before it, last scatter, bytes)
        self._timings: list[tuple["torch.cuda.Event", "torch.cuda.Event", "torch.cuda.Event", int]] = []
        self._done: list[tuple[int, float]] = []  # synchronous loads not yet reported

    @property
    def ordered(self) -> bool:
        """Copies run on CUDA streams in order with the model's work (else synchronously, `backup`)."""
        return self._backup_stream is not None

    def queue_backup(self, device_pages: list[int], host_pages: list[int],
                     after: Optional["torch.cuda.Event"] = None) -> Optional["torch.cuda.Event"]:
        """Queue the copy of device pages to host pages on the backup stream, after the work queued so far on
        the current stream (the forwards that wrote these pages), or after `after`, an event the caller
        recorded on it earlier (work queued since must not write these pages); returns the event recorded
        after the copy (the host bytes are final once it completes), or None where copies are synchronous
        (`backup` copies)."""
        stream = self._backup_stream
        if stream is None:
            return None
        if after is None:
            after = torch.cuda.current_stream(self.device).record_event()
        with torch.cuda.stream(stream), torch.inference_mode():
            stream.wait_event(after)
            self._backup_dma.device_to_host(device_pages, host_pages)
            return stream.record_event()

    def backup_counts(self) -> dict[str, int]:
        """Pages backed up by DMA straight from the pool and through the staging buffer (CUDA; else {})."""
        if self._backup_dma is None:
            return {}
        return {"pages_direct": self._backup_dma.pages_direct, "pages_staged": self._backup_dma.pages_staged}

    def backup(self, device_pages: list[int], host_pages: list[int]) -> None:
        """Copy device pages to host pages; returns once the host bytes are final."""
        done = self.queue_backup(device_pages, host_pages)
        if done is not None:
            done.synchronize()
            return
        with torch.inference_mode():
            self._kernel.device_to_host(device_pages, host_pages)

    def start_load(self, host_pages: list[int], device_pages: list[int], overlap_tokens: int = 0,
                   after: Optional["torch.cuda.Event"] = None) -> Optional[LayerLoads]:
        """Copy host pages into device pages; `overlap_tokens`: new tokens of the prefill that will run beside
        the load; `after`: an event no part of the copy may start before (backups still writing host pages
        it reads). Returns None when the copy is already complete (synchronous backends), else the handle
        of one event per layer."""
        stream = self._load_stream
        nbytes = len(host_pages) * self.host.bytes_per_page
        if stream is None:
            t0 = time.perf_counter()
            with torch.inference_mode():
                self._kernel.host_to_device(device_pages, host_pages)
            self._done.append((nbytes, time.perf_counter() - t0))
            return None
        queued = torch.cuda.current_stream(self.device).record_event()
        start, ready, end = (torch.cuda.Event(enable_timing=True) for _ in range(3))
        events: list[torch.cuda.Event] = []
        with torch.cuda.stream(stream), torch.inference_mode():
            stream.wait_event(queued)
            if after is not None:
                stream.wait_event(after)
            ready.record(stream)
            if self.use_dma_load(overlap_tokens):  # its DMA may start before `queued`, not before `after`
                events = self._load_dma.load(device_pages, host_pages, start, after)
            else:
                start.record(stream)
                ids = self._kernel.page_ids(device_pages, host_pages)
                for layer in range(self.num_layers):
                    self._kernel.copy(ids, False, range(layer, layer + 1))
                    events.append(stream.record_event())
            end.record(stream)
        self._timings.append((start, ready, end, nbytes))
        return LayerLoads(events)

    def use_dma_load(self, overlap_tokens: int) -> bool:
        """Whether a load beside a prefill of `overlap_tokens` new tokens goes by DMA (see the module doc)."""
        return self.backend == "dma" or (self.backend == "auto" and overlap_tokens < OVERLAP_TOKENS)

    def finished_loads(self) -> list[tuple[int, float]]:
        """(bytes, seconds on the device) of every load that completed since the last call. A load's time runs
        from the later of its first copy and the moment its stream stopped waiting for the compute queued
        before it: a DMA starts at once, but its scatters wait for that compute, and counting the wait would
        make a small load beside a long step look slow (and the cost model recompute host hits)."""
        done, self._done = self._done, []
        while self._timings and self._timings[0][2].query():
            start, ready, end, nbytes = self._timings.pop(0)
            done.append((nbytes, min(start.elapsed_time(end), ready.elapsed_time(end)) / 1e3))
        return done

    def wait_loads(self) -> None:
        """Block until every queued load has completed."""
        if self._load_stream is not None:
            self._load_stream.synchronize()
