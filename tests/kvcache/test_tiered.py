"""The tiered `KVCacheManager`: admission never counts pages it could only free by waiting for a backup."""
from __future__ import annotations

import threading

import torch

from tests.kvcache.tiers import make_tiered, run_copies
from tierlm.kvcache.layout import KVLayout


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
