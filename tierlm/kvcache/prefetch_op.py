"""`PrefetchOp`: the state of one L3 fetch into host pages (a request's prefetch or a probe)."""
from __future__ import annotations

import concurrent.futures as cf
import threading
from dataclasses import dataclass, field
from typing import Optional

CHUNK_PAGES = 32  # pages per store call while fetching: the granularity of best_effort/timeout progress


@dataclass(eq=False)
class PrefetchOp:
    """State of one request's prefetch (`progress`: leading pages complete in host memory)."""

    tokens: list[int]
    keys: list[str]  # of the pages from `first_page` on
    first_page: int
    created: float
    check: cf.Future
    host_pages: list[int] = field(default_factory=list)
    fetch: Optional[cf.Future] = None
    deadline: float = 0.0
    progress: int = 0
    cancel: threading.Event = field(default_factory=threading.Event)
    timing: tuple[int, float] = (0, 0.0)  # (pages, seconds) fetched so far, one tuple: set atomically
    unfetched: int = 0  # pages the store holds that are not fetched (not worth it, under the threshold, no room)
    head: int = 0  # leading pages of the hit recomputed while the rest is fetched (`tierlm.kvcache.split_fetch`)
    prompt_len: int = 0  # the request's prompt tokens (its own prefill work, apart from the others')
