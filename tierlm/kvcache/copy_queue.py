"""`CopyQueue`: the tier copies decided for the next step plan, and the backups that cannot wait for it.

The controller decides loads (host pages back to the device) and backups (device pages to host, with their
L3 writes) as requests come and go; they ride in the next step plan (`take`), so the worker runs them in
step order. Some callers cannot wait for the plan: write_back needs the host copy before it frees a device
page, and eviction that found only pages still being copied must get those copies going (`run_backups`,
`wait_for_io`). With stream-ordered copies a page whose copy is issued may be reused at once; the next plan
then carries a fence (`fence`, `StepCopies.fence`).
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

    def queue_load(self, host_nodes: Sequence[RadixNode], device_pages: list[int]) -> None:
        """Load the host copies of `host_nodes` into `device_pages` (in order) with the next plan."""
        if any(copy_pending(node) for node in host_nodes):
            self.pending.fence = True  # a host copy still being made: the load waits for it on the device
        host_pages = [p for node in host_nodes for p in node.host_pages]  # whole, or the plan is left as it was
        self.pending.load_host.extend(host_pages)
        self.pending.load_device.extend(device_pages)

    def take(self) -> StepCopies:
        """The loads and backups decided since the last call (they ride in the next step plan)."""
        copies, self.pending = self.pending, StepCopies()
        copies.backups = self._take_backups()
        return copies

    def fence(self) -> None:
        """Device pages went while their backup still copies: the next plan waits for it on the device."""
        self.pending.fence = True

    def run_backups(self) -> int:
        """Execute the decided backups now (write_back, eviction waits, flush); returns how many."""
        queue = self._take_backups()
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
