"""Copy batches of KV pages between the device pool and the page-first host pool.

Device pool (`tierlm.kvcache.pool.KVPool`): per layer K and V ``[num_slots, kv_heads, head_dim]``,
slot = page * page_size + offset. Host pool: ``[num_host_pages, layers, 2, page_size, kv_heads, head_dim]``
(pinned when the device pool is on CUDA), or a buffer of that layout on the pool's GPU (a staging area
for copy-engine transfers: `tierlm.kvcache.dma`). Pages are addressed by lists (or int tensors) of page
ids; ``device_pages[i]`` pairs with ``host_pages[i]``.

Two backends, chosen by the caller (never silently):
- ``"jit"``: our C++/CUDA kernels (tierlm/jit/csrc/kv_transfer*). On CUDA: one launch per batch on the
  current stream, GPU reading/writing the pinned host buffer directly; asynchronous, so synchronise
  (or wait on an event) before the CPU touches host pages written by `device_to_host`, and keep host pages
  read by `host_to_device` unchanged until the stream has passed the copy.
- ``"torch"``: plain PyTorch indexing; slower, synchronous with respect to the host, no build needed.
`jit_available()` / `select_backend()` tell whether the JIT build can be used here.
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


def select_backend(device: Union[str, torch.device] = "cpu") -> Backend:
    """``"jit"`` when `jit_available(device)`, else ``"torch"`` (the caller passes the result on)."""
    return "jit" if jit_available(device) else "torch"


class KVPageTransfer:
    """Page copies for one (device pool, host pool) pair; caches the layer pointer table.

    The layer tensors and the host buffer must stay allocated (and not be re-allocated) for the life of
    this object: their addresses are captured here. `unroll` and `blocks_per_sm` tune the CUDA kernel;
    `max_blocks` caps its grid so that a copy running beside the model leaves it most SMs.
    """

    def __init__(self, k_layers: Sequence[torch.Tensor], v_layers: Sequence[torch.Tensor],
                 host_buf: torch.Tensor, backend: Backend = "jit", unroll: int = DEFAULT_UNROLL,
                 blocks_per_sm: int = DEFAULT_BLOCKS_PER_SM, max_blocks: int = 0) -> None:
        if backend not in ("jit", "torch"):
            raise ValueError(f"backend must be 'jit' or 'torch', got {backend!r}")
        self.k_layers, self.v_layers, self.host_buf, self.backend = list(k_layers), list(v_layers), host_buf, backend
        _check_pools(self.k_layers, self.v_layers, host_buf)
        self.device = self.k_layers[0].device
        self.unroll, self.blocks_per_sm, self.max_blocks = int(unroll), int(blocks_per_sm), int(max_blocks)
        self.num_layers = len(self.k_layers)
        self.page_size = host_buf.shape[3]
        self.num_device_pages = self.k_layers[0].shape[0] // self.page_size
        self.num_host_pages = host_buf.shape[0]
        self._ptrs = torch.tensor([[t.data_ptr() for t in self.k_layers], [t.data_ptr() for t in self.v_layers]],
                                  dtype=torch.int64)

    def device_to_host(self, device_pages: PageIds, host_pages: PageIds, layers: Optional[range] = None) -> None:
        """Copy ``device_pages[i]`` of every layer's (or of `layers`') K and V into host page ``host_pages[i]``."""
        self.copy(self._page_ids(device_pages, host_pages), True, layers)

    def host_to_device(self, device_pages: PageIds, host_pages: PageIds, layers: Optional[range] = None) -> None:
        """Copy host page ``host_pages[i]`` into ``device_pages[i]`` of every layer's (or of `layers`') K and V."""
        self.copy(self._page_ids(device_pages, host_pages), False, layers)

    def page_ids(self, device_pages: PageIds, host_pages: PageIds) -> torch.Tensor:
        """The checked ``[2, n]`` id tensor that `copy` takes (build it once, copy layer by layer)."""
        return self._page_ids(device_pages, host_pages)

    def copy(self, ids: torch.Tensor, to_host: bool, layers: Optional[range] = None) -> None:
        """Copy the pages of `ids` (from `page_ids`) for `layers` (a contiguous range; default all)."""
        layers = range(self.num_layers) if layers is None else layers
        if layers.step != 1 or layers.start < 0 or layers.stop > self.num_layers:
            raise ValueError(f"layers must be a contiguous range within [0, {self.num_layers}), got {layers}")
        if ids.shape[1] == 0 or len(layers) == 0:
            return
        cuda = self.device.type == "cuda"
        if self.backend == "torch" or (not cuda and len(layers) != self.num_layers):
            (_torch_d2h if to_host else _torch_h2d)(self.k_layers, self.v_layers, self.host_buf, ids, layers)
            return
        mod = _module(cuda, self.unroll) if cuda else _module(False)
        fn = mod.device_to_host if to_host else mod.host_to_device
        if cuda:
            fn(self._ptrs, self.k_layers[0], self.host_buf, ids, self.blocks_per_sm, self.max_blocks, layers.start,
               len(layers))
        else:
            fn(self._ptrs, self.k_layers[0], self.host_buf, ids)

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
        return ids.to(self.device, non_blocking=True) if self.device.type != "cpu" else ids


def _check_pools(k_layers: List[torch.Tensor], v_layers: List[torch.Tensor], host_buf: torch.Tensor) -> None:
    if not k_layers or len(k_layers) != len(v_layers):
        raise ValueError(f"need as many K as V layers (>= 1), got {len(k_layers)} and {len(v_layers)}")
    ref = k_layers[0]
    for name, layers in (("k_layers", k_layers), ("v_layers", v_layers)):
        for i, t in enumerate(layers):
            if t.shape != ref.shape or t.dtype != ref.dtype or t.device != ref.device or not t.is_contiguous():
                raise ValueError(f"{name}[{i}] is {tuple(t.shape)} {t.dtype} on {t.device} (contiguous: "
                                 f"{t.is_contiguous()}); expected contiguous {tuple(ref.shape)} {ref.dtype} on {ref.device}")
    if host_buf.dim() != 6 or host_buf.shape[1:3] != (len(k_layers), 2) or host_buf.shape[4:] != ref.shape[1:]:
        raise ValueError(f"host_buf shape {tuple(host_buf.shape)} does not match [pages, {len(k_layers)}, 2, "
                         f"page_size, {ref.shape[1]}, {ref.shape[2]}]")
    staging = host_buf.device == ref.device and ref.device.type == "cuda"  # a device staging buffer
    if host_buf.dtype != ref.dtype or not (host_buf.device.type == "cpu" or staging) or not host_buf.is_contiguous():
        raise ValueError(f"host_buf must be a contiguous CPU tensor (or a staging tensor on {ref.device}) of "
                         f"{ref.dtype}, got {host_buf.dtype} on {host_buf.device}")
    if ref.shape[0] % host_buf.shape[3]:
        raise ValueError(f"num_slots {ref.shape[0]} is not a multiple of page_size {host_buf.shape[3]}")
    if ref.device.type == "cuda" and not staging and not host_buf.is_pinned():
        raise ValueError("host_buf must be pinned when the device pool is on CUDA (pin_memory=True)")


def _torch_d2h(k_layers: List[torch.Tensor], v_layers: List[torch.Tensor], host_buf: torch.Tensor,
               ids: torch.Tensor, layers: range) -> None:
    ps = host_buf.shape[3]
    dev, hst = ids[0], ids[1].to(host_buf.device)
    for layer in layers:
        for j, t in enumerate((k_layers[layer], v_layers[layer])):
            host_buf[hst, layer, j] = t.view(-1, ps, *t.shape[1:]).index_select(0, dev).to(host_buf.device)


def _torch_h2d(k_layers: List[torch.Tensor], v_layers: List[torch.Tensor], host_buf: torch.Tensor,
               ids: torch.Tensor, layers: range) -> None:
    ps = host_buf.shape[3]
    dev, hst = ids[0], ids[1].to(host_buf.device)
    for layer in layers:
        staged = host_buf[hst, layer].to(dev.device)
        for j, t in enumerate((k_layers[layer], v_layers[layer])):
            t.view(-1, ps, *t.shape[1:]).index_copy_(0, dev, staged[:, j])


def device_to_host(k_layers: Sequence[torch.Tensor], v_layers: Sequence[torch.Tensor], device_pages: PageIds,
                   host_buf: torch.Tensor, host_pages: PageIds, backend: Backend = "jit") -> None:
    """One-shot `KVPageTransfer.device_to_host` (builds the pointer table each call)."""
    KVPageTransfer(k_layers, v_layers, host_buf, backend).device_to_host(device_pages, host_pages)


def host_to_device(k_layers: Sequence[torch.Tensor], v_layers: Sequence[torch.Tensor], device_pages: PageIds,
                   host_buf: torch.Tensor, host_pages: PageIds, backend: Backend = "jit") -> None:
    """One-shot `KVPageTransfer.host_to_device`: host page ``host_pages[i]`` -> ``device_pages[i]``."""
    KVPageTransfer(k_layers, v_layers, host_buf, backend).host_to_device(device_pages, host_pages)
