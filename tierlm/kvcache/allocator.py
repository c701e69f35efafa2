"""`PageAllocator`: hands out and takes back fixed-size KV pages (device or host); detects double frees."""
from __future__ import annotations

from typing import Iterable, Optional


class PageAllocator:
    """Free list of page ids `reserved..num_pages-1`; allocations come back sorted, so pages handed out
    together tend to be consecutive (one DMA run on the host side).

    The device pool reserves page 0 as its scratch page (`reserved=1`); the host pool reserves none.
    Invariant: every usable page is either free or owned by exactly one holder (a running request, a radix
    node or an L3 prefetch); `free` of a page that is already free raises.
    """

    def __init__(self, num_pages: int, reserved: int = 0) -> None:
        if num_pages <= reserved:
            raise ValueError(f"a pool of {num_pages} pages has no usable page ({reserved} reserved)")
        self.num_pages = num_pages
        self.reserved = reserved
        self._free = list(range(num_pages - 1, reserved - 1, -1))  # pop from the end: low ids first
        self._is_free = bytearray(reserved) + bytearray(b"\x01") * (num_pages - reserved)

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def capacity(self) -> int:
        return self.num_pages - self.reserved

    def alloc(self, n: int) -> Optional[list[int]]:
        """Return `n` pages (sorted), or None (allocating nothing) when fewer are free."""
        if n > len(self._free):
            return None
        if n <= 0:
            return []
        pages = self._free[-n:]
        del self._free[-n:]
        pages.reverse()
        for p in pages:
            self._is_free[p] = 0
        return pages

    def free(self, pages: Iterable[int]) -> None:
        pages = list(pages)
        for p in pages:
            if not self.reserved <= p < self.num_pages:
                raise ValueError(f"page {p} out of range {self.reserved}..{self.num_pages - 1}")
            if self._is_free[p]:
                raise RuntimeError(f"double free of KV page {p}")
            self._is_free[p] = 1
        self._free.extend(sorted(pages, reverse=True))

    def is_free(self, page: int) -> bool:
        return bool(self._is_free[page])

    def free_pages(self) -> set[int]:
        """Every free page (for leak checks)."""
        return {p for p in range(self.reserved, self.num_pages) if self._is_free[p]}
