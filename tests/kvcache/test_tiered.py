"""The tiered `KVCacheManager`: admission never counts pages it could only free by waiting for a backup."""
from __future__ import annotations

import threading

import torch

from tests.kvcache.tiers import make_tiered, run_copies
from tierlm.kvcache.contracts import TierSetup
from tierlm.kvcache.eviction import copy_pending
from tierlm.kvcache.host_pool import HostKVPool
from tierlm.kvcache.layout import KVLayout
from tierlm.kvcache.manager import KVCacheManager
from tierlm.kvcache.pool import KVPool
from tierlm.kvcache.tier_io import TierIO
from tierlm.kvcache.transfer import PageTransfer


def test_pages_behind_a_backup_in_flight_are_not_available():
    kv, _, _ = make_tiered(4, 17, 32, KVLayout.gqa(2, 1, 4, torch.float32), max_reqs=4, io_backend="torch")
    gate = threading.Event()
    copy = kv.io.transfer.backup
    kv.io.transfer.backup = lambda *a: (gate.wait(10), copy(*a))  # hold every D2H copy until released
    try:
        base = kv.available_pages()
        tokens = list(range(20))
        pages = kv.alloc(5)
        kv.release(None, tokens, pages, None, 0, cache=True)  # write_through: a backup of 5 pages is decided
        run_copies(kv)  # ... and starts
        assert kv.radix.evictable_pages == 5
        assert kv.available_pages() == base - 5  # cached, but only evictable after the copy
        other = [100 + t for t in range(8)]
        assert kv.admit("other", other, base * 4, base * 4, 0).value == "wait"  # its room is behind the copy
        assert kv.tier_stats()["backups"]["admission_waits"] == 1
        gate.set()
        kv.flush()
        assert kv.available_pages() == base
        assert kv.alloc(base) is not None  # everything, including the now backed-up prefix
    finally:
        gate.set()
        kv.close()


class _OrderedIO(TierIO):
    """Claims the stream ordering of CUDA copies, so the controller's side of it runs on CPU pools (the
    copies themselves are held back by the test, so no byte is checked here)."""

    @property
    def ordered_copies(self) -> bool:
        return True


def _ordered_kv() -> tuple[KVCacheManager, _OrderedIO, threading.Event]:
    """A tiered manager on CPU pools with stream-ordered copies claimed, whose D2H copies all stay "under way"
    until the returned event is set."""
    layout = KVLayout.gqa(2, 1, 4, torch.float32)
    pool, host = KVPool(layout, 17, 4, torch.device("cpu")), HostKVPool(32, layout, 4)
    io = _OrderedIO(PageTransfer(pool, host, "torch"))
    kv = KVCacheManager(17, 4, 4, True, TierSetup(host_pages=32, page_bytes=pool.bytes_per_page, io=io))
    gate = threading.Event()
    copy = io.transfer.backup
    io.transfer.backup = lambda *a: (gate.wait(10), copy(*a))
    return kv, io, gate


def test_with_ordered_copies_pages_behind_an_issued_backup_are_reused_and_the_next_plan_fences():
    kv, io, gate = _ordered_kv()
    try:
        base = kv.available_pages()
        tokens = list(range(20))
        pages = kv.alloc(5)
        kv.release(None, tokens, pages, None, 0, cache=True)  # write_through: a backup of 5 pages is decided
        assert kv.available_pages() == base - 5  # decided, not issued: nothing orders a reuse after it yet
        # more than eviction could free next to a reserved page: the decided backup stays queued for the plan
        assert kv.admit("huge", [200 + t for t in range(8)], base * 4, base * 4, 1).value == "wait"
        assert len(kv.backups.queue) == 1 and kv.tier_stats()["backups"]["issued_for_admission"] == 0
        # room that only the decided backup holds: admission issues it now instead of waiting a step
        got = kv.admit("other", [100 + t for t in range(8)], base * 4, base * 4, 0)
        assert got.row is not None and len(got.pages) == 0 and kv.grow(got.pages, base * 4)
        assert not kv.backups.queue and kv.available_pages() == 0
        assert set(pages) <= set(got.pages)  # the pages still being copied went to the new request ...
        copies = kv.take_copies()
        assert copies.fence == 0 and not copies.backups  # ... the plan that writes them waits for that copy
        node = kv.radix.match_prefix(tokens).host_nodes[0]
        assert node.pages is None and copy_pending(node)  # host-only, its host copy still on its way
        stats = kv.tier_stats()
        assert stats["L1"]["dropped_while_copying_pages"] == 5 and stats["backups"]["admission_waits"] == 0
        assert stats["backups"]["issued_for_admission"] == 1
        kv.release(got.row, [], got.pages, got.node, 0, cache=False)
        hit = kv.admit("again", tokens + [7], 24, 24, 0)  # a load of that host copy fences too
        assert len(hit.pages) == 5 and kv.take_copies().fence == 0
        gate.set()
        kv.flush()
        assert not copy_pending(node)
        kv.release(hit.row, [], hit.pages, hit.node, 5, cache=False)
        kv.check_no_leak()
    finally:
        gate.set()
        kv.close()


def test_a_plan_fences_only_on_the_backups_of_the_pages_it_reuses():
    """Backups are numbered as issued; a plan that reuses the pages of the older of two backups still
    copying waits (on the device) for that one only, not for the newer one issued after it."""
    kv, io, gate = _ordered_kv()
    try:
        old, new = list(range(20)), list(range(100, 116))
        kv.release(None, old, kv.alloc(5), None, 0, cache=True)
        kv.copies.run_backups()  # issued first: number 0
        kv.radix.match_prefix(new[:4])  # (the older prefix stays the least recently used)
        kv.release(None, new, kv.alloc(4), None, 0, cache=True)
        kv.copies.run_backups()  # number 1
        assert kv.copies.issued == 2 and io.last_seq == 1 and io.numbering_ok
        assert kv.alloc(kv.allocator.num_free + 5) is not None  # takes the five pages of the older prefix
        assert kv.tier_stats()["L1"]["dropped_while_copying_pages"] == 5
        assert kv.take_copies().fence == 0  # the older backup only
        assert kv.alloc(4) is not None  # now the newer prefix's pages too
        assert kv.take_copies().fence == 1
        assert kv.take_copies().fence == -1  # nothing reused since
    finally:
        gate.set()
        kv.close()
