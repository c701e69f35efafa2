"""GQA test pools for the byte-level page movers: K/V per layer and a typed page-first host buffer, turned
into the regions and host bytes `KVPageTransfer` takes (the typed views stay valid for assertions)."""
from __future__ import annotations

from typing import Any, Sequence

import torch

from tierlm.jit.kv_transfer import KVPageTransfer, byte_pages


def gqa_regions(k: Sequence[torch.Tensor], v: Sequence[torch.Tensor], page_size: int) -> list[torch.Tensor]:
    pages = k[0].shape[0] // page_size
    return [byte_pages(t, pages) for pair in zip(k, v) for t in pair]


def host_bytes(host: torch.Tensor) -> torch.Tensor:
    """`[pages, layers, 2, page_size, heads, dim]` as uint8 `[pages, page_bytes]` (same memory)."""
    return host.view(torch.uint8).view(host.shape[0], -1) if host.dtype != torch.uint8 else host


def gqa_transfer(k: Sequence[torch.Tensor], v: Sequence[torch.Tensor], host: torch.Tensor, backend: str = "jit",
                 **kw: Any) -> KVPageTransfer:
    """A transfer over per-layer K/V and a typed host pool, layers of two regions (K then V)."""
    return KVPageTransfer(gqa_regions(k, v, host.shape[3]), host_bytes(host), [2] * len(k), backend, **kw)
