"""`CandidateHeap`: one tier's eviction candidates, kept in least-recently-used order between evictions.

Listing the whole tree for every eviction costs time in proportion to the tree, on the scheduler's thread,
at every step that needs room: a millisecond at a thousand nodes, tens of milliseconds at tens of thousands
(a large host tier). The heap keeps the candidates of its last scan ordered by last access and checks each
one as it comes out: a node that is no longer a candidate (evicted, locked, given children) is dropped, one
touched since it went in goes back with its new time, one that could not be freed this time (a copy or a
write still reads it) goes back after the eviction. A node whose parent it freed joins at once.

Nodes that become candidates otherwise (new leaves, paths that requests released) join at the next scan,
which happens when the heap runs out while pages are still wanted, and after the tree has been touched a
quarter as many times as the scan visited nodes: the order drifts from exact LRU only by nodes used since
then, and a scan costs O(1) per touch. A tree smaller than `RESCAN_BELOW` nodes is scanned at every
eviction (exact LRU where a scan is cheap).
"""
from __future__ import annotations

import heapq
from typing import Any, Callable, Iterable, Optional

from tierlm.kvcache.radix import RadixCache, RadixNode

RESCAN_BELOW = 512  # nodes: a smaller tree is listed at every eviction
RESCAN_SHARE = 0.25  # a scan of N nodes is redone after N * RESCAN_SHARE matches and inserts


def last_access(node: RadixNode) -> int:
    return node.last_access


class CandidateHeap:
    """Eviction candidates of one tier of `tree`: `is_candidate(node)` says whether a node may be taken now,
    `key(node)` orders them (smallest first; it may change only when the node is used, or when `epoch()`
    changes, which rebuilds the heap)."""

    def __init__(self, tree: RadixCache, is_candidate: Callable[[RadixNode], bool],
                 rescan_below: Optional[int] = None, key: Callable[[RadixNode], Any] = last_access,
                 epoch: Callable[[], int] = lambda: 0) -> None:
        self.tree, self.is_candidate, self.key, self.epoch = tree, is_candidate, key, epoch
        self._epoch = epoch()
        self.rescan_below = RESCAN_BELOW if rescan_below is None else rescan_below
        self.rescan_share = RESCAN_SHARE
        self._heap: list[tuple[int, int, RadixNode]] = []
        self._visited = 0  # nodes the last scan listed
        self._clock = 0  # the tree's clock at the last scan
        self.scans = 0

    def _scan(self, skip: dict[int, RadixNode]) -> None:
        heap, visited = [], 0
        for node in self.tree.nodes():
            visited += 1
            if id(node) not in skip and self.is_candidate(node):
                heap.append((self.key(node), id(node), node))
        heapq.heapify(heap)
        self._heap, self._visited, self._clock, self._epoch = heap, visited, self.tree.clock, self.epoch()
        self.scans += 1

    def _stale(self) -> bool:
        return (not self._heap or self._visited < self.rescan_below or self._epoch != self.epoch()
                or self.tree.clock - self._clock > self._visited * self.rescan_share)

    def _push(self, node: RadixNode) -> None:
        heapq.heappush(self._heap, (self.key(node), id(node), node))

    def evict(self, num_pages: int, take: Callable[[RadixNode], tuple[int, Iterable]]) -> tuple[int, list]:
        """Take candidates, least recently used first, until `num_pages` are freed or none is left; `take(node)`
        returns (pages freed, futures that kept it). Returns (pages freed, those futures)."""
        tried: dict[int, RadixNode] = {}  # taken this call without freeing anything: not again this call
        scanned = self._stale()
        if scanned:
            self._scan(tried)
        root, freed, blocking = self.tree.root, 0, []
        while freed < num_pages:
            if not self._heap:
                if scanned:
                    break
                self._scan(tried)  # out of candidates: list the tree once more for the ones that joined since
                scanned = True
                continue
            stamp, _, node = heapq.heappop(self._heap)
            if id(node) in tried or not self.is_candidate(node):
                continue
            if stamp != self.key(node):  # used since it went in: back in its new place
                self._push(node)
                continue
            parent = node.parent
            got, wait = take(node)
            blocking.extend(wait)
            freed += got
            if not got:
                tried[id(node)] = node
            elif parent is not root and parent is not None and self.is_candidate(parent):
                self._push(parent)
        for node in tried.values():  # still copying or writing: a candidate again from the next eviction on
            self._push(node)
        return freed, blocking
