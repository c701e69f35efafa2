"""`Backups`: the write policies of the host tier — which device nodes get a host (and L3) copy, when.

Decisions only: a backup takes host pages, records a `Ticket` on the node and queues a copy command for
the executor (it runs with the next step plan, or at once through `run_now` when a caller must wait).
Policies: `write_through` backs a node up when it is inserted or hit without a host copy;
`write_through_selective` once it has been hit `threshold` times; `write_back` when the device evicts it.
Storage (L3) policies: `write_through` writes a host copy to L3 as soon as it is made; `write_back` only when
the host tier evicts it (`store_back`: the host pages stay until the write has finished) and at shutdown
(`flush_unstored`), so a host tier with room costs the store no write while serving; `auto` is write_back
until the host tier is under pressure (`host_pressure()`: it has evicted as many pages as it holds),
write_through from then on, when the working set has outgrown it and L3 must hold what it cannot (and from
the start for a store other engines read, `KVStore.shared`); for a store only this engine reads, `auto`
writes pass a `WriteGate`, which withholds them while they are not read back and loads would not pay.
"""
from __future__ import annotations

import time
import weakref
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Optional

from tierlm.kvcache.events import CPU, DISK
from tierlm.kvcache.eviction import copy_issued, copy_pending, host_valid
from tierlm.kvcache.metrics import TierMetrics
from tierlm.kvcache.radix import MatchResult, RadixCache, RadixNode
from tierlm.kvcache.tier_io import Ticket
from tierlm.kvcache.write_gate import WriteGate

WRITE_POLICIES = ("write_through", "write_through_selective", "write_back")
STORAGE_WRITE_POLICIES = ("write_through", "write_back", "auto")
FLUSH_UNSTORED_S = 60.0  # storage write_back: longest a shutdown spends writing host copies to L3


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
                 run_now: Callable[[], None], metrics: TierMetrics, page_bytes: int, with_store: bool,
                 storage_policy: str = "write_through", host_pressure: Callable[[], bool] = lambda: True,
                 gate: Optional[WriteGate] = None, reuse_copying: bool = False) -> None:
        if policy not in WRITE_POLICIES:
            raise ValueError(f"--hicache-write-policy: unknown policy {policy!r}")
        if storage_policy not in STORAGE_WRITE_POLICIES:
            raise ValueError(f"--hicache-storage-write-policy: unknown policy {storage_policy!r}")
        self.tree, self.policy, self.storage_policy = tree, policy, storage_policy
        self._host_pressure, self.gate = host_pressure, gate
        self.deferring = storage_policy != "write_through"  # L3 writes may wait for the host tier's eviction
        self.reuse_copying = reuse_copying  # device pages may go once their copy is issued (`Evictor` reuse)
        self.threshold = 1 if policy == "write_through" else threshold
        self._alloc_host, self._run_now = alloc_host, run_now
        self.metrics, self.page_bytes, self.with_store = metrics, page_bytes, with_store
        self.queue: list[BackupCommand] = []
        self._copying: set[RadixNode] = set()  # nodes with a D2H backup that may still be running
        # L3 writes that ended without storing their pages: (node, its page keys), appended by the I/O thread
        # that completes the ticket; a node is marked in the store when its write is decided (so no other
        # backup writes it again) and unmarked here by `settle_writes` on the scheduler's thread
        self._unstored: deque[tuple[RadixNode, frozenset[str]]] = deque()
        # storage write_back: nodes whose L3 write ended unstored; their next eviction does not wait for a
        # store that failed (or was behind) once already, so eviction always makes progress (weak: a node
        # that leaves the tree otherwise is not kept alive here)
        self._not_written: "weakref.WeakSet[RadixNode]" = weakref.WeakSet()

    @classmethod
    def for_tiers(cls, tiers: Any, tree: RadixCache, alloc_host: Callable[[int], Optional[list[int]]],
                  run_now: Callable[[], None], metrics: TierMetrics, host_evicted: Callable[[], int],
                  l3_served_pages: Callable[[], int], l3_pays: Callable[[], bool]) -> "Backups":
        """The write policies of a `TierSetup`. Storage policy auto writes at once when the store is shared
        with other engines, or once the host tier has evicted as many pages as it holds (the working set has
        outgrown it; a few evictions at the edge of a fitting working set do not count); an unshared store's
        writes pass a `WriteGate` (windows of a quarter of the host tier) fed by the pages the store served
        back and by whether its loads pay."""
        store = tiers.store
        shared = store is not None and store.shared
        gate = (WriteGate(tiers.host_pages // 4, l3_served_pages, l3_pays)
                if store is not None and not shared and tiers.storage_write_policy == "auto" else None)
        return cls(tree, tiers.write_policy, tiers.write_threshold, alloc_host, run_now, metrics, tiers.page_bytes,
                   store is not None, tiers.storage_write_policy,
                   lambda: shared or host_evicted() >= tiers.host_pages, gate, tiers.io.ordered_copies)

    def take(self) -> list[BackupCommand]:
        """The decided copies, handed to the executor now (with a step plan, or at once)."""
        queue, self.queue = self.queue, []
        for c in queue:
            c.ticket.issued = True
        return queue

    def backup(self, node: RadixNode) -> bool:
        """Decide a copy of a device-only node to host (and L3); False when there is no host room."""
        if node.pages is None or node.host_pages is not None or not node.pages:
            return False
        host = self._alloc_host(len(node.pages))
        if host is None:
            self.metrics.backups["skipped_no_host_room"] += 1
            return False
        write_now = self.storage_policy == "write_through" or (self.storage_policy == "auto" and self._host_pressure())
        keys = self._allowed(self._unstored_keys(node)) if write_now else None
        ticket = Ticket()
        self.queue.append(BackupCommand(list(node.pages), host, keys, ticket))
        node.io.append(ticket)
        self._copying.add(node)
        node.host_pages, node.host_since = host, self.tree.clock
        self.tree.events.stored(node, CPU)
        if keys:  # only pages not yet known to be in L3 are written
            self._mark_stored(node, ticket, keys)
        self.metrics.backups["pages"] += len(host)
        self.metrics.backups["bytes"] += len(host) * self.page_bytes
        return True

    def _unstored_keys(self, node: RadixNode) -> Optional[list[str]]:
        return list(node.page_hashes) if self.with_store and not node.in_store and node.page_hashes else None

    def _allowed(self, keys: Optional[list[str]]) -> Optional[list[str]]:
        """`keys` unless the write gate withholds their write now (counted)."""
        if keys and self.gate is not None and not self.gate.allow(len(keys)):
            self.metrics.backups["l3_withheld_pages"] += len(keys)
            return None
        return keys

    def _mark_stored(self, node: RadixNode, ticket: Ticket, keys: list[str]) -> None:
        node.in_store = True
        self.tree.events.stored(node, DISK)
        self._watch_write(ticket, node, frozenset(keys))

    def store_back(self, node: RadixNode) -> list:
        """Storage write_back, as the host tier evicts `node`: queue the L3 write of its host copy and start
        it; returns the futures that keep its host pages (none when there is nothing to write)."""
        keys = self._unstored_keys(node) if self.deferring else None
        if not keys or not host_valid(node):
            return []
        if node in self._not_written:
            self._not_written.discard(node)
            self.metrics.backups["l3_skipped_on_eviction_pages"] += len(keys)
            return []
        if not self._allowed(keys):
            return []
        ticket = self._write_host_copy(node, keys, "l3_on_eviction_pages")
        self._run_now()
        return [ticket.stored]

    def _write_host_copy(self, node: RadixNode, keys: list[str], counter: str) -> Ticket:
        """Queue the L3 write of `node`'s host copy (no device copy involved)."""
        ticket = Ticket()
        self.queue.append(BackupCommand([], list(node.host_pages), keys, ticket))
        node.io.append(ticket)
        self._mark_stored(node, ticket, keys)
        self.metrics.backups[counter] += len(keys)
        return ticket

    def flush_unstored(self, wait: Callable[[], None], batch_bytes: int, deadline_s: float) -> None:
        """Storage write_back at shutdown: write every valid host copy not in L3, `batch_bytes` at a time
        (each batch waited for, so none is dropped at the write queue's bound), for at most `deadline_s`;
        what is left is counted, not written."""
        if not self.deferring or not self.with_store:
            return
        end, queued = time.monotonic() + deadline_s, 0
        for node in sorted(self.tree.nodes(), key=lambda n: n.last_access, reverse=True):  # recent first
            keys = self._unstored_keys(node)
            if not keys or not host_valid(node):
                continue
            if time.monotonic() > end:
                self.metrics.backups["l3_unwritten_at_close_pages"] += len(keys)
                continue
            self._write_host_copy(node, keys, "l3_at_close_pages")
            queued += len(keys) * self.page_bytes
            if queued >= batch_bytes:
                self._run_now()
                wait()
                queued = 0
        self._run_now()

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
            if self.deferring:
                self._not_written.add(node)
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
        goes only after its children); with `reuse_copying`, only of those whose copy is not issued yet.
        Walks up from the nodes being copied, not over the whole tree."""
        self._copying = {n for n in self._copying if copy_pending(n) and n.pages is not None
                         and not (self.reuse_copying and copy_issued(n))}
        seen: set[int] = set()
        total = 0
        for node in self._copying:
            while node is not None and node is not self.tree.root and id(node) not in seen:
                seen.add(id(node))
                if node.pages is not None and not node.lock_ref:
                    total += node.num_pages
                node = node.parent
        return total
