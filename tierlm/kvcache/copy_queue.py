"""`CopyQueue`: the tier copies decided for the next step plan, and the backups that cannot wait for it.

The controller decides loads (host pages back to the device) and backups (device pages to host, with their
L3 writes) as requests come and go; they ride in the next step plan (`take`), so the worker runs them in
step order. Some callers cannot wait for the plan: write_back needs the host copy before it frees a device
page, and eviction that found only pages still being copied must get those copies going (`run_backups`,
`wait_for_io`). Backups are numbered as they are issued (`Ticket.seq`), the order the executor runs them
in. With stream-ordered copies a page whose copy is issued may be reused at once; the next plan then
carries a fence (`fence`, `StepCopies.fence`): the number of the last backup it must wait for, that of the
reused pages' own backups, not of every backup issued before the plan.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Sequence

from tierlm.kvcache.backups import BackupCommand
from tierlm.kvcache.contracts import StepCopies
from tierlm.kvcache.eviction import copy_pending
from tierlm.kvcache.metrics import TierMetrics
from tierlm.kvcache.radix import RadixNode


class CopyQueue:
    """The copies of the next step plan (`pending`). `take_backups()` hands over the backups the write
    policies decided (and marks them issued); `io` is the copy executor (`TierIO` or its fan-out)."""

    def __init__(self, io: Any, take_backups: Callable[[], list[BackupCommand]], metrics: TierMetrics) -> None:
        self.io, self._take_backups, self.metrics = io, take_backups, metrics
        self.pending = StepCopies()
        self.issued = 0  # backups issued so far (the next one's number)
        self._fence_all = False  # the next plan waits for every backup issued before it

    def queue_load(self, host_nodes: Sequence[RadixNode], device_pages: list[int]) -> None:
        """Load the host copies of `host_nodes` into `device_pages` (in order) with the next plan."""
        for node in host_nodes:
            if copy_pending(node):
                self.fence(node)  # a host copy still being made: the load waits for it on the device
        host_pages = [p for node in host_nodes for p in node.host_pages]  # whole, or the plan is left as it was
        self.pending.load_host.extend(host_pages)
        self.pending.load_device.extend(device_pages)

    def take(self) -> StepCopies:
        """The loads and backups decided since the last call (they ride in the next step plan)."""
        copies, self.pending = self.pending, StepCopies()
        if self._fence_all:
            copies.fence, self._fence_all = self.issued - 1, False
        copies.backups = self._issue()
        return copies

    def _issue(self) -> list[BackupCommand]:
        queue = self._take_backups()
        for c in queue:
            c.ticket.seq, self.issued = self.issued, self.issued + 1
        return queue

    def fence(self, node: RadixNode) -> None:
        """`node`'s device pages went while its backup still copies (or a load reads its host copy being
        made): the next plan waits on the device for that backup, and so for those issued before it."""
        pending = [t.seq for t in node.io if not t.copy.done()]
        if any(s < 0 for s in pending):  # not numbered (never the case for an issued copy): wait for all
            self._fence_all = True
        elif pending:
            self.pending.fence = max(self.pending.fence, *pending)

    def run_backups(self) -> int:
        """Execute the decided backups now (write_back, eviction waits, flush); returns how many."""
        queue = self._issue()
        for c in queue:
            self.io.backup(c.device_pages, c.host_pages, c.keys, c.ticket)
        return len(queue)

    def wait_for_io(self, futures: list, reuse_copying: bool) -> None:
        """Device eviction found only pages still being copied: start the backups still queued and, unless
        issued copies may be reused (`reuse_copying`), wait for the first of `futures` (counted)."""
        t0 = time.perf_counter()
        if self.run_backups() and reuse_copying:
            return  # issued now: eviction may take those pages at once (the next plan fences)
        self.io.wait_any(futures)
        self.metrics.backups["eviction_waits"] += 1
        self.metrics.backups["eviction_wait_s"] += time.perf_counter() - t0
