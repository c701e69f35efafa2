"""Pools of the Llama-3.1-8B KV shape for the page-copy benchmarks, and the check of what they copied."""
from __future__ import annotations

from typing import Sequence

import torch

from tierlm.kvcache.host_pool import HostKVPool
from tierlm.kvcache.layout import KVLayout
from tierlm.kvcache.pool import KVPool

PAGE, LAYERS = 16, 32  # tokens per page; the 8B's layers (8 KV heads of 128, bf16)


def llama8b_pools(pages: int) -> tuple[KVPool, HostKVPool]:
    """A CUDA pool of `pages` pages of random bytes (plus the reserved page) and a pinned host pool as large."""
    layout = KVLayout.gqa(LAYERS, 8, 128, torch.bfloat16)
    pool = KVPool(layout, pages + 1, PAGE, torch.device("cuda"))
    for t in pool.regions():
        t.random_(0, 255)
    return pool, HostKVPool(pages, layout, PAGE, pin=True)


def host_matches(pool: KVPool, host: HostKVPool, pairs: Sequence[tuple[int, int]]) -> bool:
    """Whether each (device page, host page) pair holds the same bytes (the host page in page-first order)."""
    ok = True
    for d, h in pairs:
        page = torch.cat([r[d].reshape(-1).view(torch.uint8) for r in pool.regions()]).cpu()
        ok &= bool(torch.equal(host.buffer[h].reshape(-1)[: page.numel()], page))
    return ok
