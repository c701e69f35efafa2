"""Copy batches of KV pages between a device pool and a page-first host pool, as opaque bytes.

Device pool: a list of *regions*, one per (layer, KV buffer) in page-first order, each a contiguous uint8
tensor ``[num_device_pages, chunk_bytes]`` (a byte view of a pool buffer: `byte_pages`). Host pool: one
contiguous uint8 tensor ``[num_host_pages, page_bytes]`` whose page holds the regions' chunks back to back
in region order (pinned when the pool is on CUDA), or a buffer of that layout on the pool's GPU (a staging
area for copy-engine transfers: `tierlm.kvcache.dma`). Nothing here knows what a region holds (K, V, a
latent); `tierlm.kvcache.layout.KVLayout` decides that. ``device_pages[i]`` pairs with ``host_pages[i]``.

Two backends here, chosen by the caller (never silently; `tierlm.kernels.kv_pages` adds a Triton one):
- ``"jit"``: our C++/CUDA kernels (tierlm/jit/csrc/kv_transfer*). On CUDA: one launch per batch on the
  current stream, GPU reading/writing the pinned host buffer directly; asynchronous, so synchronise
  (or wait on an event) before the CPU touches host pages written by `device_to_host`, and keep host pages
  read by `host_to_device` unchanged until the stream has passed the copy.
- ``"torch"``: plain PyTorch indexing; slower, synchronous with respect to the host, no build needed.
`jit_available()` tells whether the JIT build can be used here.
"""
from __future__ import annotations

import functools
import logging
from typing import Any, List, Literal, Optional, Sequence, Union

import torch

from tierlm.jit.cpp_args import make_cpp_args
from tierlm.jit.loader import load_jit

logger = logging.getLogger(__name__)

Backend = Literal["jit", "torch"]
PageIds = Union[Sequence[int], torch.Tensor]


DEFAULT_UNROLL = 4  # 16-byte vectors each CUDA thread loads before storing
DEFAULT_BLOCKS_PER_SM = 0  # 0 = the kernel's default (8)


@functools.lru_cache(maxsize=None)
def _module(cuda: bool, unroll: int = DEFAULT_UNROLL) -> Any:
    if cuda:
        args = make_cpp_args(unroll)
        return load_jit("kv_transfer_cuda", *args, cuda_files=["kv_transfer.cuh"], cuda_wrappers=[
            ("device_to_host", f"tierlm_kernels::kv_device_to_host_cuda<{args}>"),
            ("host_to_device", f"tierlm_kernels::kv_host_to_device_cuda<{args}>")])
    return load_jit("kv_transfer_cpu", cpp_files=["kv_transfer_cpu.h"], cpp_wrappers=[
        ("device_to_host", "tierlm_kernels::kv_device_to_host_cpu"),
        ("host_to_device", "tierlm_kernels::kv_host_to_device_cpu")])


def jit_available(device: Union[str, torch.device] = "cpu") -> bool:
    """Whether the JIT transfer kernels for `device` build and load here (the result is memoised)."""
    try:
        _module(torch.device(device).type == "cuda")
        return True
    except Exception as e:  # no compiler, no nvcc, a failed build, a required cache hit missing...
        logger.warning("tierlm.jit: KV transfer kernels unavailable for %s: %s", device, e)
        return False


def byte_pages(t: torch.Tensor, num_pages: int) -> torch.Tensor:
    """A contiguous tensor (any dtype, leading dim a multiple of `num_pages`) as uint8 ``[num_pages, bytes]``."""
    if not t.is_contiguous():
        raise ValueError(f"a KV buffer must be contiguous, got strides {t.stride()}")
    flat = t.reshape(-1).view(torch.uint8) if t.element_size() > 1 or t.dtype != torch.uint8 else t.reshape(-1)
    if flat.numel() % num_pages:
        raise ValueError(f"a buffer of {flat.numel()} bytes does not split into {num_pages} pages")
    return flat.view(num_pages, flat.numel() // num_pages)


class KVPageTransfer:
    """Page copies for one (device regions, host pool) pair; caches the region table.

    `layer_sizes` groups consecutive regions into layers (default: one region per layer) so that a copy
    can be limited to a range of layers. The region tensors and the host buffer must stay allocated (and
    not be re-allocated) for the life of this object: their addresses are captured here. `unroll` and
    `blocks_per_sm` tune the CUDA kernel; `max_blocks` caps its grid so that a copy running beside the
    model leaves it most SMs.
    """

    BACKENDS: tuple[str, ...] = ("jit", "torch")

    def __init__(self, regions: Sequence[torch.Tensor], host_buf: torch.Tensor,
                 layer_sizes: Optional[Sequence[int]] = None, backend: Backend = "jit",
                 unroll: int = DEFAULT_UNROLL, blocks_per_sm: int = DEFAULT_BLOCKS_PER_SM, max_blocks: int = 0) -> None:
        if backend not in self.BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(map(repr, self.BACKENDS))}, got {backend!r}")
        self.regions, self.host_buf, self.backend = list(regions), host_buf, backend
        self.offsets = _check_pools(self.regions, host_buf)
        layer_sizes = [1] * len(self.regions) if layer_sizes is None else list(layer_sizes)
        if sum(layer_sizes) != len(self.regions) or any(n < 1 for n in layer_sizes):
            raise ValueError(f"layer_sizes {layer_sizes} do not partition {len(self.regions)} regions")
        self._first = [0]
        for n in layer_sizes:
            self._first.append(self._first[-1] + n)
        self.device = self.regions[0].device
        self.unroll, self.blocks_per_sm, self.max_blocks = int(unroll), int(blocks_per_sm), int(max_blocks)
        self.num_layers = len(layer_sizes)
        self.num_device_pages = self.regions[0].shape[0]
        self.num_host_pages = host_buf.shape[0]
        self._table = torch.tensor([[t.data_ptr() for t in self.regions], [t.shape[1] for t in self.regions],
                                    self.offsets], dtype=torch.int64)

    @property
    def region_table(self) -> torch.Tensor:
        """int64 ``[3, R]`` on the CPU: each region's base address, bytes per page and offset in a host page."""
        return self._table

    def device_to_host(self, device_pages: PageIds, host_pages: PageIds, layers: Optional[range] = None) -> None:
        """Copy ``device_pages[i]`` of every layer (or of `layers`) into host page ``host_pages[i]``."""
        self.copy(self._page_ids(device_pages, host_pages), True, layers)

    def host_to_device(self, device_pages: PageIds, host_pages: PageIds, layers: Optional[range] = None) -> None:
        """Copy host page ``host_pages[i]`` into ``device_pages[i]`` of every layer (or of `layers`)."""
        self.copy(self._page_ids(device_pages, host_pages), False, layers)

    def page_ids(self, device_pages: PageIds, host_pages: PageIds) -> torch.Tensor:
        """The checked ``[2, n]`` id tensor that `copy` takes (build it once, copy layer by layer)."""
        return self._page_ids(device_pages, host_pages)

    def copy(self, ids: torch.Tensor, to_host: bool, layers: Optional[range] = None) -> None:
        """Copy the pages of `ids` (from `page_ids`) for `layers` (a contiguous range; default all)."""
        first, count = self._layer_regions(layers)
        if ids.shape[1] == 0 or count == 0:
            return
        if self.backend == "torch":
            (_torch_d2h if to_host else _torch_h2d)(self.regions, self.offsets, self.host_buf, ids,
                                                    range(first, first + count))
            return
        cuda = self.device.type == "cuda"
        mod = _module(cuda, self.unroll) if cuda else _module(False)
        fn = mod.device_to_host if to_host else mod.host_to_device
        if cuda:
            fn(self._table, self.host_buf, ids, self.num_device_pages, self.blocks_per_sm, self.max_blocks, first,
               count)
        else:
            fn(self._table, self.host_buf, ids, self.num_device_pages, first, count)

    def _layer_regions(self, layers: Optional[range]) -> tuple[int, int]:
        """(first region, region count) of a contiguous range of layers (default all); checks the range."""
        layers = range(self.num_layers) if layers is None else layers
        if layers.step != 1 or layers.start < 0 or layers.stop > self.num_layers:
            raise ValueError(f"layers must be a contiguous range within [0, {self.num_layers}), got {layers}")
        if len(layers) == 0:
            return 0, 0
        return self._first[layers.start], self._first[layers.stop] - self._first[layers.start]

    def _page_ids(self, device_pages: PageIds, host_pages: PageIds) -> torch.Tensor:
        """int64 [2, n] on the pool's device; ids given on the CPU are range-checked here."""
        on_device = [isinstance(p, torch.Tensor) and p.device.type != "cpu" for p in (device_pages, host_pages)]
        if all(on_device):  # already on the GPU: trusted (checking would synchronise)
            return torch.stack([device_pages.to(torch.int64), host_pages.to(torch.int64)])  # type: ignore[union-attr]
        rows: List[torch.Tensor] = []
        for name, pages, limit in (("device_pages", device_pages, self.num_device_pages),
                                   ("host_pages", host_pages, self.num_host_pages)):
            t = torch.as_tensor(pages.cpu() if isinstance(pages, torch.Tensor) else pages, dtype=torch.int64)
            if t.dim() != 1:
                raise ValueError(f"{name} must be 1-d, got shape {tuple(t.shape)}")
            if t.numel() and (int(t.min()) < 0 or int(t.max()) >= limit):
                bad = t[(t < 0) | (t >= limit)][0].item()
                raise ValueError(f"{name} contains {bad}, out of range [0, {limit})")
            rows.append(t)
        if rows[0].numel() != rows[1].numel():
            raise ValueError(f"device_pages has {rows[0].numel()} ids but host_pages has {rows[1].numel()}")
        ids = torch.stack(rows)
        if self.device.type == "cpu":
            return ids
        # from pinned memory (see `tierlm.utils.upload`): a copy queued behind a forward or other copies must
        # not block the host
        return ids.pin_memory().to(self.device, non_blocking=True)


def _check_pools(regions: List[torch.Tensor], host_buf: torch.Tensor) -> list[int]:
    """Validate the pools; returns each region's byte offset within a host page."""
    if not regions:
        raise ValueError("need at least one region")
    ref = regions[0]
    for i, t in enumerate(regions):
        if (t.dim() != 2 or t.dtype != torch.uint8 or t.device != ref.device or t.shape[0] != ref.shape[0]
                or not t.is_contiguous()):
            raise ValueError(f"regions[{i}] is {tuple(t.shape)} {t.dtype} on {t.device} (contiguous: "
                             f"{t.is_contiguous()}); expected contiguous uint8 [{ref.shape[0]}, chunk_bytes] on "
                             f"{ref.device}")
    offsets, total = [], 0
    for t in regions:
        offsets.append(total)
        total += t.shape[1]
    if host_buf.dim() != 2 or host_buf.shape[1] != total:
        raise ValueError(f"host_buf shape {tuple(host_buf.shape)} does not match [pages, {total}] (the regions' "
                         f"bytes per page)")
    staging = host_buf.device == ref.device and ref.device.type == "cuda"  # a device staging buffer
    if host_buf.dtype != torch.uint8 or not (host_buf.device.type == "cpu" or staging) or not host_buf.is_contiguous():
        raise ValueError(f"host_buf must be a contiguous uint8 CPU tensor (or a staging tensor on {ref.device}), "
                         f"got {host_buf.dtype} on {host_buf.device}")
    if ref.device.type == "cuda" and not staging and not host_buf.is_pinned():
        raise ValueError("host_buf must be pinned when the device pool is on CUDA (pin_memory=True)")
    return offsets


def _torch_d2h(regions: List[torch.Tensor], offsets: List[int], host_buf: torch.Tensor, ids: torch.Tensor,
               which: range) -> None:
    dev, hst = ids[0], ids[1].to(host_buf.device)
    for r in which:
        off, n = offsets[r], regions[r].shape[1]
        host_buf[hst, off:off + n] = regions[r].index_select(0, dev).to(host_buf.device)


def _torch_h2d(regions: List[torch.Tensor], offsets: List[int], host_buf: torch.Tensor, ids: torch.Tensor,
               which: range) -> None:
    dev, hst = ids[0], ids[1].to(host_buf.device)
    lo = offsets[which.start]
    hi = offsets[which.stop - 1] + regions[which.stop - 1].shape[1]
    staged = host_buf[hst, lo:hi].to(dev.device)  # one copy for the whole range of regions
    for r in which:
        off, n = offsets[r] - lo, regions[r].shape[1]
        regions[r].index_copy_(0, dev, staged[:, off:off + n])
