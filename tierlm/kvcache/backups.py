"""`Backups`: the write policies of the host tier — which device nodes get a host (and L3) copy, when.

Decisions only: a backup takes host pages, records a `Ticket` on the node and queues a copy command for
the executor (it runs with the next step plan, or at once through `run_now` when a caller must wait).
Policies: `write_through` backs a node up when it is inserted or hit without a host copy;
`write_through_selective` once it has been hit `threshold` times; `write_back` when the device evicts it.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable, Optional

from tierlm.kvcache.events import CPU, DISK
from tierlm.kvcache.eviction import copy_pending, host_valid
from tierlm.kvcache.metrics import TierMetrics
from tierlm.kvcache.radix import MatchResult, RadixCache, RadixNode
from tierlm.kvcache.tier_io import Ticket

WRITE_POLICIES = ("write_through", "write_through_selective", "write_back")


@dataclass
class BackupCommand:
    """Copy `device_pages` to `host_pages`, then write them to L3 under `keys` (when given)."""

    device_pages: list[int]
    host_pages: list[int]
    keys: Optional[list[str]]
    ticket: Ticket


class Backups:
    """Write policy state: the queue of decided copies and the nodes whose copy may still be running.

    `alloc_host(n)` returns host pages (evicting host copies) or None; `run_now()` executes the queue
    immediately (write_back needs the host copy before it frees the device pages).
    """

    def __init__(self, tree: RadixCache, policy: str, threshold: int, alloc_host: Callable[[int], Optional[list[int]]],
                 run_now: Callable[[], None], metrics: TierMetrics, page_bytes: int, with_store: bool) -> None:
        if policy not in WRITE_POLICIES:
            raise ValueError(f"--hicache-write-policy: unknown policy {policy!r}")
        self.tree, self.policy = tree, policy
        self.threshold = 1 if policy == "write_through" else threshold
        self._alloc_host, self._run_now = alloc_host, run_now
        self.metrics, self.page_bytes, self.with_store = metrics, page_bytes, with_store
        self.queue: list[BackupCommand] = []
        self._copying: set[RadixNode] = set()  # nodes with a D2H backup that may still be running
        # L3 writes that ended without storing their pages: (node, its page keys), appended by the I/O thread
        # that completes the ticket; a node is marked in the store when its write is decided (so no other
        # backup writes it again) and unmarked here by `settle_writes` on the scheduler's thread
        self._unstored: deque[tuple[RadixNode, frozenset[str]]] = deque()

    def take(self) -> list[BackupCommand]:
        queue, self.queue = self.queue, []
        return queue

    def backup(self, node: RadixNode) -> bool:
        """Decide a copy of a device-only node to host (and L3); False when there is no host room."""
        if node.pages is None or node.host_pages is not None or not node.pages:
            return False
        host = self._alloc_host(len(node.pages))
        if host is None:
            self.metrics.backups["skipped_no_host_room"] += 1
            return False
        keys = list(node.page_hashes) if self.with_store and not node.in_store and node.page_hashes else None
        ticket = Ticket()
        self.queue.append(BackupCommand(list(node.pages), host, keys, ticket))
        node.io.append(ticket)
        self._copying.add(node)
        node.host_pages = host
        self.tree.events.stored(node, CPU)
        if keys:  # only pages not yet known to be in L3 are written
            node.in_store = True
            self.tree.events.stored(node, DISK)
            self._watch_write(ticket, node, frozenset(keys))
        self.metrics.backups["pages"] += len(host)
        self.metrics.backups["bytes"] += len(host) * self.page_bytes
        return True

    def write_back(self, node: RadixNode) -> bool:
        """write_back: back the node up and wait for the host copy (eviction needs it before freeing)."""
        if self.backup(node):
            self._run_now()
            node.io[-1].copy.exception()  # waits; a failure leaves the copy invalid
        return host_valid(node)

    def on_match(self, match: MatchResult) -> None:
        """A request matched this path: back up the nodes that reached the policy's hit count."""
        if self.policy == "write_back":
            return
        node = match.node
        while node is not self.tree.root:
            if node.hit_count >= self.threshold and node.host_pages is None:
                self.backup(node)
            node = node.parent

    def on_insert(self, leaf: Optional[RadixNode]) -> None:
        if leaf is not None and self.policy == "write_through":
            self.backup(leaf)

    def _watch_write(self, ticket: Ticket, node: RadixNode, keys: frozenset[str]) -> None:
        def done(f) -> None:  # on the thread that completes the write
            if f.exception() is not None or f.result() is not True:
                self._unstored.append((node, keys))
        ticket.stored.add_done_callback(done)

    def settle_writes(self) -> int:
        """Unmark the nodes whose L3 write ended without storing their pages (dropped at the queue bound, or
        failed), with a DISK removal event, so they may be written again and no router counts on them;
        returns pages unmarked. A node split since its write was decided shares the ticket with the upper
        part split off it, an ancestor whose pages are all among the written ones: both are unmarked."""
        unmarked = 0
        while self._unstored:
            node, keys = self._unstored.popleft()
            while (node is not self.tree.root and node.parent is not None and node.in_store
                   and node.page_hashes and keys.issuperset(node.page_hashes)):
                if node.parent.children.get(node.key[:self.tree.page_size]) is not node:
                    break  # left the tree: its events are done
                node.in_store = False
                self.tree.events.removed(node, DISK)
                unmarked += len(node.page_hashes)
                node = node.parent
        return unmarked

    def pages_behind_io(self) -> int:
        """Unlocked device pages of nodes whose backup is still copying, and of their ancestors (a parent
        goes only after its children). Walks up from the nodes being copied, not over the whole tree."""
        self._copying = {n for n in self._copying if copy_pending(n)}
        seen: set[int] = set()
        total = 0
        for node in self._copying:
            while node is not None and node is not self.tree.root and id(node) not in seen:
                seen.add(id(node))
                if node.pages is not None and not node.lock_ref:
                    total += node.num_pages
                node = node.parent
        return total
