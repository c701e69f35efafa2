"""KV-cache events: what the radix tree holds, per tier, told to whoever listens as it changes.

The controller calls `RadixEvents` at every change of residency it decides (a node gains or loses its
device pages, its host pages, or its known L3 copy); `RadixEvents` turns a node into the sink's terms — the
chained page keys of `tierlm.kvcache.keys.PageHasher` (hex), the key of the page before the node, and the
node's token ids — so a sink needs nothing from the tree. Replaying the calls in order gives exactly the
pages the tree holds per medium. The default sink is None: no event is built at all.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Optional, Protocol, Sequence

if TYPE_CHECKING:
    from tierlm.kvcache.radix import RadixNode

# Where a page sits, in the words KV-event consumers use: the tier, not the hardware (on a CPU-only engine
# the device pool is still "GPU").
GPU = "GPU"  # L1, the device KV pool
CPU = "CPU"  # L2, the host KV pool
DISK = "DISK"  # L3, the KV store (pages this engine wrote to it or fetched from it while its tree holds them)
MEDIA = (GPU, CPU, DISK)


class KVEventSink(Protocol):
    """Receives the cache's changes, one call per node and medium, in the order the controller makes them.

    `page_keys` are hex page keys (each depends on every token before the page); `parent_key` is the key of
    the page before the first one (None at the start of a sequence); `token_ids` are the tokens of all the
    pages, page after page.
    """

    def stored(self, medium: str, page_keys: Sequence[str], parent_key: Optional[str],
               token_ids: Sequence[int]) -> None: ...

    def removed(self, medium: str, page_keys: Sequence[str]) -> None: ...

    def cleared(self) -> None: ...


class RadixEvents:
    """Reports residency changes of radix nodes to a `KVEventSink` (or does nothing without one).

    Every node the tree holds has its page keys while a sink is attached (the controller computes them
    when it inserts), so a change can always be named.
    """

    def __init__(self, sink: Optional[KVEventSink] = None) -> None:
        self.sink = sink

    @property
    def enabled(self) -> bool:
        return self.sink is not None

    def stored(self, node: "RadixNode", medium: str) -> None:
        if self.sink is None:
            return
        parent = node.parent
        parent_key = parent.page_hashes[-1] if parent is not None and parent.page_hashes else None
        self.sink.stored(medium, list(node.page_hashes), parent_key, list(node.key))

    def removed(self, node: "RadixNode", medium: str) -> None:
        if self.sink is not None:
            self.sink.removed(medium, list(node.page_hashes))

    def left_tree(self, nodes: Iterable["RadixNode"]) -> None:
        """`nodes` (a subtree, parents before children) leave the tree: every medium each held is removed,
        children first."""
        if self.sink is None:
            return
        for node in reversed(list(nodes)):
            if node.pages is not None:
                self.removed(node, GPU)
            if node.host_pages is not None:
                self.removed(node, CPU)
            if node.in_store:
                self.removed(node, DISK)

    def cleared(self) -> None:
        if self.sink is not None:
            self.sink.cleared()
