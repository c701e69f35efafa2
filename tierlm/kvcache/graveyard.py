"""`FetchGraveyard`: host pages that a stopped L3 fetch may still write, freed once the fetch has ended."""
from __future__ import annotations

import concurrent.futures as cf
from typing import Callable


class FetchGraveyard:
    """A cancelled or late fetch runs on the L3 thread until it notices, so the host pages it reads into cannot
    be reused before it ends. `bury` frees them at once when the fetch is done, otherwise holds them until
    `reap` finds it done (or `wait_all`, at shutdown). Held pages count as in use (`held_pages`)."""

    def __init__(self, free_host: Callable[[list[int]], None]) -> None:
        self._free_host = free_host
        self._graves: list[tuple[cf.Future, list[int]]] = []

    @property
    def held_pages(self) -> list[int]:
        return [p for _, pages in self._graves for p in pages]

    def bury(self, fetch: cf.Future, pages: list[int]) -> None:
        if fetch.done():
            self._free_host(pages)
        else:
            self._graves.append((fetch, pages))

    def reap(self) -> None:
        """Free the pages of every fetch that has ended."""
        keep = []
        for fetch, pages in self._graves:
            if fetch.done():
                self._free_host(pages)
            else:
                keep.append((fetch, pages))
        self._graves = keep

    def wait_all(self) -> None:
        cf.wait([fetch for fetch, _ in self._graves])
        self.reap()
