"""`RadixCache`: a page-aligned radix tree over token ids whose nodes own KV pages in one or more tiers.

Nodes (`radix_node.py`) carry device pages, host pages (L2), page hashes (L3 keys) and hit counts; the same
tree serves an engine with or without lower tiers.
"""
from __future__ import annotations

from typing import Callable, Iterator, Optional, Sequence

from tierlm.kvcache.events import CPU, DISK, GPU, RadixEvents
from tierlm.kvcache.radix_node import MatchResult, RadixNode


_RUN_PAGES = 32  # pages compared at once by `_common_pages`


class RadixCache:
    """Prefix cache over KV pages of every tier: match, insert, lock/unlock of in-use paths, and the page
    counters admission reads. Eviction (`tierlm.kvcache.eviction`) removes nodes; nothing here frees a page.
    Every change of a node's residency, here or by the other parts of the controller, is told to `events`.
    """

    def __init__(self, page_size: int, events: Optional[RadixEvents] = None) -> None:
        self.page_size = page_size
        self.events = events or RadixEvents()
        self.root = RadixNode(pages=[], lock_ref=1)  # the root is never evicted
        self.evictable_pages = 0
        self.protected_pages = 0
        self._tick = 0

    # ---- helpers -----------------------------------------------------------------------------------------
    def _touch(self) -> int:
        self._tick += 1
        return self._tick

    @property
    def clock(self) -> int:
        """Matches and inserts so far (the `last_access` of the latest)."""
        return self._tick

    def _page_key(self, tokens: Sequence[int], start: int) -> tuple[int, ...]:
        return tuple(tokens[start:start + self.page_size])

    def _common_pages(self, key: tuple[int, ...], tokens: Sequence[int], start: int) -> int:
        """Whole pages `key` and `tokens[start:]` have in common: all of them compared at once (one C-level tuple
        comparison), then runs of pages and pages only where they differ. A walk costs a few slices per node
        instead of Python work per page, on the scheduler's thread at every arrival and admission."""
        ps, n = self.page_size, 0
        limit = min(len(key), len(tokens) - start) // ps
        run = limit  # all of it first: a walk along a cached conversation matches whole nodes
        while n < limit:
            m = min(run, limit - n)
            a, b = start + n * ps, n * ps
            if tuple(tokens[a:a + m * ps]) != key[b:b + m * ps]:
                if m == 1:
                    return n
                run = 1 if m <= _RUN_PAGES else _RUN_PAGES  # narrow down to the run, then the page, that differs
                continue
            n += m
        return n

    def _split(self, node: RadixNode, n_pages: int) -> RadixNode:
        """Split `node` after `n_pages` pages; returns the new upper node (which inherits locks and stamps)."""
        cut = n_pages * self.page_size
        upper = RadixNode(key=node.key[:cut], pages=node.pages[:n_pages] if node.pages is not None else None,
                          parent=node.parent, lock_ref=node.lock_ref, last_access=node.last_access,
                          hit_count=node.hit_count,
                          host_pages=node.host_pages[:n_pages] if node.host_pages is not None else None,
                          page_hashes=node.page_hashes[:n_pages] if node.page_hashes is not None else None,
                          io=list(node.io), in_store=node.in_store, host_since=node.host_since)  # tickets: both
        node.parent.children[node.key[:self.page_size]] = upper
        node.key = node.key[cut:]
        if node.pages is not None:
            node.pages = node.pages[n_pages:]
        if node.host_pages is not None:
            node.host_pages = node.host_pages[n_pages:]
        if node.page_hashes is not None:
            node.page_hashes = node.page_hashes[n_pages:]
        node.parent = upper
        upper.children[node.key[:self.page_size]] = node
        return upper

    # ---- public API --------------------------------------------------------------------------------------
    def _walk(self, tokens: Sequence[int]) -> Iterator[tuple[RadixNode, int]]:
        """(child, pages in common) along the cached path of `tokens`' whole pages; ends after a partial
        match (the caller may split that child) without touching the tree."""
        node, pos = self.root, 0
        usable = len(tokens) - len(tokens) % self.page_size
        while pos < usable:
            child = node.children.get(self._page_key(tokens, pos))
            if child is None:
                return
            n = self._common_pages(child.key, tokens, pos)
            partial = n < child.size  # decided before the caller may split `child`
            yield child, n
            if partial:
                return
            pos += n * self.page_size
            node = child

    def match_prefix(self, tokens: Sequence[int]) -> MatchResult:
        """Longest page-aligned cached prefix of `tokens`; splits a node where the match ends inside it."""
        node, pages, host_nodes, now = self.root, [], [], self._touch()
        for child, n in self._walk(tokens):
            if n < child.size:
                child = self._split(child, n)
            child.last_access = now
            child.hit_count += 1
            if child.pages is not None:
                pages.extend(child.pages)
            else:
                host_nodes.append(child)
            node = child
        return MatchResult(node=node, pages=pages, host_nodes=host_nodes)

    def truncate_match(self, match: MatchResult, host_pages: int) -> MatchResult:
        """`match` cut after the first `host_pages` of its host-only pages (the rest is to be recomputed);
        the node where the cut falls is split. Call before locking the match."""
        node = match.host_nodes[0].parent if match.host_nodes else match.node  # the last device node
        kept, left = [], host_pages
        for child in match.host_nodes:
            if left <= 0:
                break
            if child.size > left:
                child = self._split(child, left)
            kept.append(child)
            left -= child.size
            node = child
        return MatchResult(node=node, pages=match.pages, host_nodes=kept)

    def match_length(self, tokens: Sequence[int]) -> int:
        """Pages of the longest cached prefix in any tier, without touching or splitting the tree."""
        return sum(n for _, n in self._walk(tokens))

    def match_key(self, tokens: Sequence[int]) -> tuple[int, Optional[str]]:
        """`match_length`, and the L3 key of the prefix's last page (None when nothing matched or the tree
        holds no key for it): the key from which the keys of the following pages are chained."""
        pages, key = 0, None
        for child, n in self._walk(tokens):
            pages += n
            key = child.page_hashes[n - 1] if child.page_hashes and n else None
        return pages, key

    def insert_pages(self, tokens: Sequence[int], pages: list[int],
                     keys: Optional[Callable[[int, Optional[str]], list[str]]] = None
                     ) -> tuple[int, list[int], Optional[RadixNode]]:
        """Insert `tokens` (a whole number of pages) backed by device `pages`; returns (tokens already cached,
        duplicate pages the caller must free, the new leaf or None). The tree owns the other pages from now
        on; a host-only node on the path adopts the caller's device pages (not duplicates). The new leaf
        stores `keys(first, parent)`: the L3 keys of the pages of `tokens` from page `first` (the leaf's
        first) on, chained from `parent`, the key of the page before it (None at the root or where the tree
        holds none). Only the pages the tree lacks are hashed."""
        ps = self.page_size
        if len(tokens) != len(pages) * ps:
            raise ValueError(f"insert of {len(tokens)} tokens with {len(pages)} pages of {ps}")
        node, pos, now, dups = self.root, 0, self._touch(), []
        while pos < len(tokens):
            child = node.children.get(self._page_key(tokens, pos))
            if child is None:
                parent_key = node.page_hashes[-1] if node is not self.root and node.page_hashes else None
                leaf = RadixNode(key=tuple(tokens[pos:]), pages=list(pages[pos // ps:]), parent=node,
                                 last_access=now, page_hashes=keys(pos // ps, parent_key) if keys else None)
                node.children[leaf.key[:ps]] = leaf
                self.evictable_pages += leaf.num_pages
                self.events.stored(leaf, GPU)
                return pos, dups, leaf
            n = self._common_pages(child.key, tokens, pos)
            if n < child.size:
                child = self._split(child, n)
            ours = pages[pos // ps:pos // ps + n]
            if child.pages is None:  # device copy was dropped: take ours (the parent is on device: ours)
                child.pages = list(ours)
                if child.lock_ref == 0:
                    self.evictable_pages += n
                else:
                    self.protected_pages += n
                self.events.stored(child, GPU)
            else:
                dups.extend(p for p, q in zip(ours, child.pages) if p != q)
            child.last_access = now
            pos += n * ps
            node = child
        return pos, dups, None

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
                                 host_pages=host_pages[i:], page_hashes=hashes[i:], in_store=True, host_since=now)
                node.children[leaf.key[:ps]] = leaf
                self.events.stored(leaf, CPU)
                self.events.stored(leaf, DISK)
                return dups
            n = self._common_pages(child.key, tokens[:end * ps], page * ps)
            if page < first_page < page + n:
                n = first_page - page  # split where the fetched pages begin
            if n < child.size:
                child = self._split(child, n)
            if page >= first_page:
                ours = host_pages[page - first_page:page - first_page + n]
                if child.host_pages is None:
                    was_in_store = child.in_store
                    child.host_pages, child.in_store, child.host_since = list(ours), True, now
                    child.page_hashes = child.page_hashes or list(hashes[page - first_page:page - first_page + n])
                    self.events.stored(child, CPU)
                    if not was_in_store:
                        self.events.stored(child, DISK)
                else:
                    dups.extend(ours)
            child.last_access = now
            page += n
            node = child
        return dups

    def lock(self, node: RadixNode) -> None:
        while node is not None and node is not self.root:
            if node.lock_ref == 0:
                self.evictable_pages -= node.num_pages
                self.protected_pages += node.num_pages
            node.lock_ref += 1
            node = node.parent

    def unlock(self, node: RadixNode) -> None:
        while node is not None and node is not self.root:
            if node.lock_ref <= 0:
                raise RuntimeError("unlock of an unlocked radix node")
            node.lock_ref -= 1
            if node.lock_ref == 0:
                self.evictable_pages += node.num_pages
                self.protected_pages -= node.num_pages
            node = node.parent

    def nodes(self) -> Iterator[RadixNode]:
        stack = list(self.root.children.values())
        while stack:
            node = stack.pop()
            yield node
            stack.extend(node.children.values())

    @property
    def cached_pages(self) -> int:
        return self.evictable_pages + self.protected_pages

    def all_pages(self) -> set[int]:
        return {p for n in self.nodes() for p in n.pages or ()}

    def all_host_pages(self) -> set[int]:
        return {p for n in self.nodes() for p in n.host_pages or ()}
