"""Device eviction while a backup completes on its copy thread: whatever moment the copy finishes at, the node
keeps a tier (never a node with neither device nor host pages, which a later match would load from None)."""
from __future__ import annotations

import pytest

from tierlm.kvcache.accounting import check_tree
from tierlm.kvcache.allocator import PageAllocator
from tierlm.kvcache.eviction import Evictor
from tierlm.kvcache.radix import RadixCache
from tierlm.kvcache.tier_io import Ticket


class Clock:
    """Counts the checks of a copy's state; the copy completes (successfully) at check number `at`."""

    def __init__(self, at: int) -> None:
        self.at, self.calls = at, 0

    def tick(self) -> bool:
        self.calls += 1
        return self.calls > self.at


class RacingFuture:
    """A future that completes on another thread between two of the evictor's looks at it: not done for the
    first `clock.at` checks of the copy (and of its L3 stage, which completes with it), done afterwards."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._done = False

    def done(self) -> bool:
        self._done = self._done or self.clock.tick()
        return self._done

    def exception(self):
        return None


@pytest.mark.parametrize("at", range(12))
def test_a_copy_that_completes_mid_eviction_never_leaves_a_node_in_no_tier(at):
    device, host = PageAllocator(8, reserved=1), PageAllocator(8, reserved=1)
    tree = RadixCache(2)
    reused = []
    ev = Evictor(tree, device.free, host.free, lambda futures: None, reuse=lambda node: reused.append(node))
    _, _, leaf = tree.insert_pages([1, 2, 3, 4], device.alloc(2))
    clock = Clock(at)
    ticket = Ticket()
    ticket.copy, ticket.stored, ticket.issued = RacingFuture(clock), RacingFuture(clock), True
    leaf.host_pages, leaf.io = host.alloc(2), [ticket]  # a backup issued, its copy under way
    assert ev.evict_device(2) == 2
    check_tree(tree)
    assert leaf.pages is None and leaf.host_pages is not None  # dropped to host: its copy stands
    assert tree.match_prefix([1, 2, 3, 4, 5]).host_nodes == [leaf]
    assert device.num_free == 7
