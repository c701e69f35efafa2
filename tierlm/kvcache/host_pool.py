"""`HostKVPool`: the L2 tier, page-first KV pages in (pinned, on CUDA) host memory, plus their allocator.

Layout: uint8 `[num_pages, page_bytes]`, each page the bytes of all layers' buffers in the page-first order
of the model's `KVLayout`: one page is one contiguous chunk, so a page is one buffer for the L3 store and a
run of pages is one DMA to the device.
"""
from __future__ import annotations

import logging
import os
from typing import Optional

import numpy as np
import torch

from tierlm.kvcache.allocator import PageAllocator
from tierlm.kvcache.layout import KVLayout

logger = logging.getLogger(__name__)


def available_host_bytes() -> Optional[int]:
    """MemAvailable from /proc/meminfo (bytes), or None where that is unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def host_pool_pages(device_pages: int, bytes_per_page: int, ratio: float, size_gb: Optional[float],
                    headroom: float = 0.9) -> int:
    """Pages of the host pool for `--hicache-size` GiB, else `ratio` x the device pool; raises ValueError
    with the flag to change when the host's available memory (x `headroom`) cannot hold it."""
    if size_gb is not None:
        pages, flag = int(size_gb * 2**30 // bytes_per_page), "--hicache-size"
    else:
        pages, flag = int(device_pages * ratio), "--hicache-ratio"
    if pages < 1:
        raise ValueError(f"{flag}: the host KV pool would hold no page of {bytes_per_page} bytes; raise it")
    need, avail = pages * bytes_per_page, available_host_bytes()
    if avail is not None and need > avail * headroom:
        raise ValueError(f"{flag}: the host KV pool needs {need / 2**30:.2f} GiB but the host has only "
                         f"{avail / 2**30:.2f} GiB available ({headroom:.0%} usable); lower {flag}")
    return pages


_ALIGN = 4096  # O_DIRECT's alignment of buffers: with it the file store reads and writes pages in place


def _page_aligned(num_pages: int, page_bytes: int, pin: bool) -> torch.Tensor:
    """A `[num_pages, page_bytes]` uint8 buffer starting on a 4 KiB boundary. Pinned memory is (it comes
    in whole pages); pageable memory from torch is only 64-byte aligned, which would make every O_DIRECT
    transfer of the file store go through a bounce buffer, one page per call."""
    if pin:
        return torch.empty((num_pages, page_bytes), dtype=torch.uint8, pin_memory=True)
    raw = torch.empty(num_pages * page_bytes + _ALIGN, dtype=torch.uint8)
    skip = -raw.data_ptr() % _ALIGN
    return raw[skip:skip + num_pages * page_bytes].view(num_pages, page_bytes)


class HostKVPool:
    """The host KV buffer and its allocator; `page_bytes`/`write_page` give the L3 stores byte views."""

    def __init__(self, num_pages: int, layout: KVLayout, page_size: int, pin: bool = False) -> None:
        self.num_pages = num_pages
        self.page_size = page_size
        self.layout = layout
        self.bytes_per_page = layout.page_bytes(page_size)
        self.buffer = _page_aligned(num_pages, self.bytes_per_page, pin)
        self.pinned = pin
        self._bytes = self.buffer.numpy()
        self.allocator = PageAllocator(num_pages)
        logger.info("Host KV pool: %d pages (%.2f GiB%s)", num_pages, num_pages * self.bytes_per_page / 2**30,
                    ", pinned" if pin else "")

    def page_bytes(self, page: int) -> memoryview:
        """The bytes of one page (a view: copy it before the page is freed)."""
        return memoryview(self._bytes[page])

    def write_page(self, page: int, data: bytes | memoryview) -> bool:
        """Fill one page from `data`; False (page untouched) when the length is wrong."""
        arr = np.frombuffer(data, dtype=np.uint8)
        if arr.size != self.bytes_per_page:
            return False
        self._bytes[page][:] = arr
        return True

    @property
    def nbytes(self) -> int:
        return self.num_pages * self.bytes_per_page
