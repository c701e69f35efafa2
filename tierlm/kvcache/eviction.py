"""`Evictor`: least-recently-used eviction from the radix tree, per tier (candidates: `CandidateHeap`).

Device (L1) eviction of a node with a valid host copy only drops the device copy (the prefix stays
matchable); otherwise the node and its host-only descendants leave the tree. Host (L2) eviction of a node
still on the device drops the host copy; a host-only node leaves the tree. Pages that a backup ticket still
reads are never freed before it is done with them: a host copy waits for its L3 write, a device copy for
its D2H copy, except that with copies ordered on the device an issued copy lets its device pages go at
once and the next step waits for it there (`reuse`; a D2H copy that fails is a device fault, after which
no step runs either).
"""
from __future__ import annotations

from typing import Callable, Optional

from tierlm.kvcache.candidates import CandidateHeap
from tierlm.kvcache.events import CPU, GPU
from tierlm.kvcache.radix import RadixCache, RadixNode
from tierlm.kvcache.retention import HostRetention


def copy_pending(node: RadixNode) -> bool:
    """A D2H backup of the node is still copying (its host copy is not yet valid). With stream-ordered copies
    the node may already be host-only then (`Evictor` with `reuse`): its host copy becomes valid without
    further action, and whatever reads or rewrites those pages next is ordered after the copy."""
    return any(not t.copy.done() for t in node.io)


def copy_issued(node: RadixNode) -> bool:
    """Every D2H copy of the node still pending has gone to the executor (it is ordered before any later
    step's work once that step fences on it)."""
    return all(t.issued for t in node.io if not t.copy.done())


def busy(node: RadixNode) -> bool:
    """Some ticket (D2H copy or L3 write) still reads the node's pages; prunes finished tickets."""
    if node.io:
        node.io = [t for t in node.io if not t.stored.done() or t.failed()]
    return any(not t.stored.done() for t in node.io)


def host_valid(node: RadixNode) -> bool:
    """The node has a complete, usable host copy."""
    return node.host_pages is not None and not copy_pending(node) and not any(t.failed() for t in node.io)


def subtree(node: RadixNode) -> list[RadixNode]:
    out, stack = [], [node]
    while stack:
        n = stack.pop()
        out.append(n)
        stack.extend(n.children.values())
    return out


class Evictor:
    """Evicts from `tree`, returning pages through `free_device`/`free_host`.

    `drain(futures)` waits until one of the given I/O futures is done (device eviction that found only nodes
    still being copied: the least recently used usually finishes first, so waiting for all I/O would stall
    longer); `write_back(node) -> bool`, when given, backs a device-only node up synchronously before it
    goes (the write_back policy); `store_back(node) -> futures`, when given, starts the L3 write of a host
    copy the store lacks before it goes (storage write_back): the node then stays until the write is done.
    `retention`, when given, orders the host tier's evictions (else least recently used). `reuse`, when
    given (copies ordered on the device), lets a device copy go while its issued backup still copies: the
    node keeps the host copy being made, and `reuse(node)` is told so that the next step plan fences on the
    node's backup (its forward may write the freed pages).
    """

    def __init__(self, tree: RadixCache, free_device: Callable[[list[int]], None],
                 free_host: Callable[[list[int]], None], drain: Callable[[list], None],
                 write_back: Optional[Callable[[RadixNode], bool]] = None,
                 store_back: Optional[Callable[[RadixNode], list]] = None,
                 retention: Optional[HostRetention] = None,
                 reuse: Optional[Callable[[RadixNode], None]] = None) -> None:
        self.tree = tree
        self._reuse = reuse
        self._free_device, self._free_host = free_device, free_host
        self._drain, self._write_back, self._store_back = drain, write_back, store_back
        self.device_candidates = CandidateHeap(tree, self._device_leaf)
        order = retention or HostRetention("lru", 0, 1)
        self.host_candidates = CandidateHeap(tree, self._host_leaf, key=order.key, epoch=lambda: order.epoch)
        self.evicted_pages_total = 0  # device pages freed
        self.device_dropped_pages_total = 0  # of which the node stayed on host
        self.reused_pages_total = 0  # of those, pages freed while their backup still copied (`reuse`)
        self.host_evicted_pages_total = 0

    # ---- device (L1) --------------------------------------------------------------------------------------
    @staticmethod
    def _device_leaf(node: RadixNode) -> bool:
        return (node.pages is not None and node.lock_ref == 0
                and not any(c.pages is not None for c in node.children.values()))

    def evict_device(self, num_pages: int) -> int:
        """Free at least `num_pages` device pages, least recently used first; returns pages freed."""
        freed = 0
        while True:
            got, blocking = self.device_candidates.evict(num_pages - freed, self._take_device)
            freed += got
            if freed >= num_pages or not blocking:
                return freed
            self._drain(blocking)  # each round at least one blocking ticket has finished: progress

    def _take_device(self, node: RadixNode) -> tuple[int, list]:
        # A copy may complete on its thread between any two of these looks (done never reverts): `pending` is
        # a snapshot, so the host copy is dropped only for a failure, and kept whenever the node still has it.
        pending = copy_pending(node)
        if pending and not (self._reuse is not None and copy_issued(node)):
            return 0, [t.copy for t in node.io if not t.copy.done()]
        if node.host_pages is not None and any(t.failed() for t in node.io) and not busy(node):
            self._drop_host(node)  # a failed backup: the host copy is garbage
        if node.host_pages is None and self._write_back is not None:
            self._write_back(node)
        n = node.num_pages
        if node.host_pages is not None and (pending or host_valid(node)):
            self.tree.events.removed(node, GPU)
            self._free_device(node.pages)
            node.pages = None
            self.device_dropped_pages_total += n
            if pending:
                self.reused_pages_total += n
                self._reuse(node)
        else:
            below = subtree(node)
            if any(busy(d) for d in below):
                return 0, [t.stored for d in below for t in d.io if not t.stored.done()]
            self._delete(node)
        self.tree.evictable_pages -= n
        self.evicted_pages_total += n
        return n, ()

    # ---- host (L2) ----------------------------------------------------------------------------------------
    @staticmethod
    def _host_leaf(node: RadixNode) -> bool:  # (a busy one is passed over by `_take_host`)
        return (node.host_pages is not None and node.lock_ref == 0
                and not any(c.host_pages is not None for c in node.children.values()))

    def evict_host(self, num_pages: int) -> int:
        """Free at least `num_pages` host pages, least recently used first; returns pages freed."""
        return self.host_candidates.evict(num_pages, self._take_host)[0]

    def _take_host(self, node: RadixNode) -> tuple[int, list]:
        if busy(node):  # a D2H copy or an L3 write still reads its host pages
            return 0, [t.stored for t in node.io if not t.stored.done()]
        keep = self._store_back(node) if self._store_back is not None else []
        if keep:  # written to L3 first; evictable once that is done
            return 0, keep
        n = len(node.host_pages)
        if node.pages is not None:
            self._drop_host(node)
        else:
            assert not node.children, "host-only node with children chosen for host eviction"
            self._delete(node)
        return n, ()

    # ---- removal ------------------------------------------------------------------------------------------
    def _delete(self, node: RadixNode) -> None:
        """Unlink `node` (unlocked; descendants host-only) and free every page below it."""
        del node.parent.children[node.key[:self.tree.page_size]]
        below = subtree(node)
        self.tree.events.left_tree(below)
        for n in below:
            if n.pages is not None:
                self._free_device(n.pages)
            if n.host_pages is not None:
                self._free_host(n.host_pages)
                self.host_evicted_pages_total += len(n.host_pages)
            n.pages = n.host_pages = None

    def _drop_host(self, node: RadixNode) -> None:
        self.tree.events.removed(node, CPU)
        self._free_host(node.host_pages)
        self.host_evicted_pages_total += len(node.host_pages)
        node.host_pages, node.io = None, []
