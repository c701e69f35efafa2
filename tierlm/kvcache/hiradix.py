"""`HiRadixCache`: the radix tree with tier residency — device eviction that keeps host-backed prefixes
matchable, host (L2) eviction, and insertion of pages fetched from the L3 store.

Residency rules (see `RadixNode`): device copies form a subtree at the root; a node is dropped from the
tree only when it lives in no tier. Pages that an I/O ticket still reads are never freed: a device copy
waits for its D2H copy to finish, a host copy for its L3 write.
"""
from __future__ import annotations

import heapq
from typing import Callable, Optional, Sequence

from tierlm.kvcache.radix import RadixCache, RadixNode


def copy_pending(node: RadixNode) -> bool:
    """A D2H backup of the node is still copying (its host copy is not yet valid)."""
    return any(not t.copy.done() for t in node.io)


def busy(node: RadixNode) -> bool:
    """Some ticket (D2H copy or L3 write) still reads the node's pages; prunes finished tickets."""
    if node.io:
        node.io = [t for t in node.io if not t.done.done() or t.failed()]
    return any(not t.done.done() for t in node.io)


def host_valid(node: RadixNode) -> bool:
    """The node has a complete, usable host copy."""
    return node.host_pages is not None and not copy_pending(node) and not any(t.failed() for t in node.io)


class HiRadixCache(RadixCache):
    """Radix cache over device and host pages.

    `free_host_pages` returns host pages to their allocator; `write_back(node) -> bool`, when given, backs a
    device-only node up to host synchronously at eviction (the write_back policy); `drain(futures)` waits
    until one of the given I/O futures is done (used when eviction found only nodes still being copied:
    the least recently used of them usually finishes first, so waiting for all I/O would stall longer).
    """

    def __init__(self, page_size: int, free_pages: Callable[[list[int]], None],
                 free_host_pages: Callable[[list[int]], None], drain: Callable[[list], None],
                 write_back: Optional[Callable[[RadixNode], bool]] = None) -> None:
        super().__init__(page_size, free_pages)
        self._free_host = free_host_pages
        self._drain = drain
        self._write_back = write_back
        self.host_evicted_pages_total = 0
        self.device_dropped_pages_total = 0  # device copies dropped while the node stays on host

    # ---- device (L1) eviction ----------------------------------------------------------------------------
    def _device_leaf(self, node: RadixNode) -> bool:
        return (node.pages is not None and node.lock_ref == 0
                and not any(c.pages is not None for c in node.children.values()))

    def evict(self, num_pages: int) -> int:
        """Free at least `num_pages` device pages, least recently used first; returns pages freed."""
        freed = 0
        while True:
            got, blocking = self._evict_pass(num_pages - freed)
            freed += got
            if freed >= num_pages or not blocking:
                return freed
            self._drain(blocking)  # each round at least one blocking ticket has finished: progress

    def _evict_pass(self, num_pages: int) -> tuple[int, list]:
        """Evict up to `num_pages`; returns (pages freed, futures of the I/O that kept nodes from going)."""
        heap = [(n.last_access, id(n), n) for n in self.nodes() if self._device_leaf(n)]
        heapq.heapify(heap)
        freed, blocking = 0, []
        while freed < num_pages and heap:
            _, _, node = heapq.heappop(heap)
            if copy_pending(node):
                blocking.extend(t.copy for t in node.io if not t.copy.done())
                continue
            if node.host_pages is not None and not host_valid(node) and not busy(node):
                self._drop_host(node)  # a failed backup: the host copy is garbage
            if node.host_pages is None and self._write_back is not None:
                self._write_back(node)
            parent, n = node.parent, node.num_pages
            if host_valid(node):
                self._free_pages(node.pages)
                node.pages = None
                self.device_dropped_pages_total += n
            elif any(busy(d) for d in self._subtree(node)):
                blocking.extend(t.done for d in self._subtree(node) for t in d.io if not t.done.done())
                continue
            else:
                self._delete_subtree(node)
            freed += n
            self.evictable_pages -= n
            self.evicted_pages_total += n
            if parent is not self.root and self._device_leaf(parent):
                heapq.heappush(heap, (parent.last_access, id(parent), parent))
        return freed, blocking

    def _subtree(self, node: RadixNode) -> list[RadixNode]:
        out, stack = [], [node]
        while stack:
            n = stack.pop()
            out.append(n)
            stack.extend(n.children.values())
        return out

    def _delete_subtree(self, node: RadixNode) -> None:
        """Unlink `node` (unlocked; descendants host-only) and free every page below it."""
        del node.parent.children[node.key[:self.page_size]]
        for n in self._subtree(node):
            if n.pages is not None:
                self._free_pages(n.pages)
            if n.host_pages is not None:
                self._free_host(n.host_pages)
                self.host_evicted_pages_total += len(n.host_pages)
            n.pages = n.host_pages = None

    def _drop_host(self, node: RadixNode) -> None:
        self._free_host(node.host_pages)
        self.host_evicted_pages_total += len(node.host_pages)
        node.host_pages, node.io = None, []

    # ---- host (L2) eviction ------------------------------------------------------------------------------
    def _host_leaf(self, node: RadixNode) -> bool:
        return (node.host_pages is not None and node.lock_ref == 0 and not busy(node)
                and not any(c.host_pages is not None for c in node.children.values()))

    def evict_host(self, num_pages: int) -> int:
        """Free at least `num_pages` host pages, least recently used first: a node also on device just
        loses its host copy; a host-only node (then childless) leaves the tree. Returns pages freed."""
        heap = [(n.last_access, id(n), n) for n in self.nodes() if self._host_leaf(n)]
        heapq.heapify(heap)
        freed = 0
        while freed < num_pages and heap:
            _, _, node = heapq.heappop(heap)
            parent, n = node.parent, len(node.host_pages)
            if node.pages is not None:
                self._drop_host(node)
            else:
                assert not node.children, "host-only node with children chosen for host eviction"
                self._delete_subtree(node)
            freed += n
            if parent is not self.root and self._host_leaf(parent):
                heapq.heappush(heap, (parent.last_access, id(parent), parent))
        return freed

    # ---- pages fetched from L3 ------------------------------------------------------------------------------
    def insert_host(self, tokens: Sequence[int], first_page: int, host_pages: list[int],
                    hashes: list[str]) -> list[int]:
        """Attach host pages holding pages `first_page..` of `tokens` (`hashes` are their L3 keys).

        The first `first_page` pages must still be in the tree (any tier); if they are not, nothing is
        attached. Returns the host pages the caller must free (duplicates, or all when not attached)."""
        ps, node, page, now = self.page_size, self.root, 0, self._touch()
        end = first_page + len(host_pages)
        if len(tokens) < end * ps:
            raise ValueError("insert_host: fewer tokens than pages")
        dups: list[int] = []
        while page < end:
            child = node.children.get(tuple(tokens[page * ps:(page + 1) * ps]))
            if child is None:
                if page < first_page:
                    return dups + host_pages  # the prefix left the tree meanwhile: cannot attach
                i = page - first_page
                leaf = RadixNode(key=tuple(tokens[page * ps:end * ps]), pages=None, parent=node, last_access=now,
                                 host_pages=host_pages[i:], page_hashes=hashes[i:], in_store=True)
                node.children[leaf.key[:ps]] = leaf
                return dups
            n = self._common_pages(child.key, tokens[:end * ps], page * ps)
            if page < first_page < page + n:
                n = first_page - page  # split where the fetched pages begin
            if n < child.size:
                child = self._split(child, n)
            if page >= first_page:
                ours = host_pages[page - first_page:page - first_page + n]
                if child.host_pages is None:
                    child.host_pages, child.in_store = list(ours), True
                    child.page_hashes = child.page_hashes or list(hashes[page - first_page:page - first_page + n])
                else:
                    dups.extend(ours)
            child.last_access = now
            page += n
            node = child
        return dups
