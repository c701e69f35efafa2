"""`RadixNode` (one edge of the prefix tree and the KV pages holding it, in every tier) and `MatchResult`
(a matched prefix): the records `RadixCache` (`radix.py`) and the tiers that move its pages share."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass(eq=False)
class RadixNode:
    """One edge of the tree: `key` (token ids, a whole number of pages) and the KV pages holding them.

    Residency: `pages` are device (L1) pages, None once the device copy is dropped; `host_pages` are host
    (L2) pages or None. Invariants: a node lives in at least one tier; `len(key) == size * page_size`;
    a device-resident node's parent is device-resident (device copies form a subtree at the root, so a
    matched path is device pages then host-only pages); a node's `lock_ref` counts the running requests
    whose matched path passes through it (so a parent's count >= the sum of its children's).
    """

    key: tuple[int, ...] = ()
    pages: Optional[list[int]] = None  # device (L1) pages
    parent: Optional["RadixNode"] = None
    children: dict[tuple[int, ...], "RadixNode"] = field(default_factory=dict)
    lock_ref: int = 0
    last_access: int = 0
    hit_count: int = 0
    host_pages: Optional[list[int]] = None  # L2 residency, filled by the host tier
    page_hashes: Optional[list[str]] = None  # L3 keys, filled by the store tier
    io: list[Any] = field(default_factory=list)  # tier I/O tickets still reading this node's pages
    in_store: bool = False  # known to be in the L3 store (came from it, or written to it)
    host_since: int = 0  # the tree's clock when the host copy was made (used since: last_access > host_since)

    @property
    def num_pages(self) -> int:
        """Device pages held (0 when the node lives on host only)."""
        return len(self.pages) if self.pages is not None else 0

    @property
    def size(self) -> int:
        """Pages of the key, whichever tier holds them."""
        return len(self.pages) if self.pages is not None else len(self.host_pages or ())


@dataclass
class MatchResult:
    """Longest cached, page-aligned prefix: the deepest node reached, the device pages of its device part
    and the host-only nodes after it (which must be loaded back before the prefix can be used)."""

    node: RadixNode
    pages: list[int]
    host_nodes: list[RadixNode] = field(default_factory=list)

    @property
    def num_host_pages(self) -> int:
        return sum(n.size for n in self.host_nodes)
