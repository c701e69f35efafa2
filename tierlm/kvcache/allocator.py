"""`PageAllocator`: hands out and takes back fixed-size KV pages; detects double frees."""
from __future__ import annotations

from typing import Iterable, Optional


class PageAllocator:
    """Free list of page ids `1..num_pages-1` (page 0 is the pool's scratch page and never handed out).

    Invariant: every usable page is either in the free list or owned by exactly one holder (a running
    request or a radix node); `free` of a page that is already free raises.
    """

    def __init__(self, num_pages: int) -> None:
        self.num_pages = num_pages
        self._free = list(range(num_pages - 1, 0, -1))  # pop() yields low ids first
        self._is_free = bytearray(num_pages)
        for p in self._free:
            self._is_free[p] = 1

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def capacity(self) -> int:
        return self.num_pages - 1

    def alloc(self, n: int) -> Optional[list[int]]:
        """Return `n` pages, or None (allocating nothing) when fewer are free."""
        if n > len(self._free):
            return None
        if n <= 0:
            return []
        pages = self._free[-n:]
        del self._free[-n:]
        for p in pages:
            self._is_free[p] = 0
        return pages

    def free(self, pages: Iterable[int]) -> None:
        for p in pages:
            if not 0 < p < self.num_pages:
                raise ValueError(f"page {p} out of range 1..{self.num_pages - 1}")
            if self._is_free[p]:
                raise RuntimeError(f"double free of KV page {p}")
            self._is_free[p] = 1
            self._free.append(p)

    def is_free(self, page: int) -> bool:
        return bool(self._is_free[page])
