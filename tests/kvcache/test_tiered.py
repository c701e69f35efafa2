"""`TieredKVCacheManager`: admission never counts pages it could only free by waiting for a backup."""
from __future__ import annotations

import threading

import torch

from tierlm.kvcache.pool import KVPool
from tierlm.kvcache.tiered import TieredKVCacheManager


def test_pages_behind_a_backup_in_flight_are_not_available():
    pool = KVPool(num_pages=17, page_size=4, num_layers=2, num_kv_heads=1, head_dim=4, dtype=torch.float32,
                  device=torch.device("cpu"))
    kv = TieredKVCacheManager(4, 4, 64, pool, host_pages=32, io_backend="torch")
    gate = threading.Event()
    copy = kv.transfer.backup
    kv.transfer.backup = lambda *a: (gate.wait(10), copy(*a))  # hold every D2H copy until released
    try:
        base = kv.available_pages()
        tokens = list(range(20))
        pages = kv.alloc(5)
        kv.release(tokens, pages, None, 0, cache=True)  # write_through: a backup of 5 pages starts
        assert kv.radix.evictable_pages == 5
        assert kv.available_pages() == base - 5  # cached, but only evictable after the copy
        gate.set()
        kv.flush()
        assert kv.available_pages() == base
        assert kv.alloc(base) is not None  # everything, including the now backed-up prefix
    finally:
        gate.set()
        kv.close()
