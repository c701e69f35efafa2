"""`PrefetchOp`: the state of one L3 fetch into host pages (a request's prefetch or a probe)."""
from __future__ import annotations

import concurrent.futures as cf
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from tierlm.kvcache.stores.base import DEFAULT_CALL_PAGES


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
    # > 0: fetched while the request waits behind others' prefill, until about this time; it never delays the
    # request, which takes what has arrived when it is admitted (`CostModel.hidden_pages`)
    hidden_until: float = 0.0

    def read_from(self, store: Any) -> None:
        """L3 thread: read the pages into `host_pages` in calls of the store's `call_pages` (the granularity
        of best_effort/timeout progress), stopping at cancellation or at the first page that fails."""
        keys = self.keys[self.head:self.head + len(self.host_pages)]
        chunk = call_pages(store)
        for start in range(0, len(keys), chunk):
            if self.cancel.is_set():
                return
            t0 = time.perf_counter()
            ok = store.batch_get(keys[start:start + chunk], self.host_pages[start:start + chunk])
            # only pages that arrived count: a store that misses fast must not look fast
            self.timing = (self.timing[0] + sum(map(bool, ok)), self.timing[1] + time.perf_counter() - t0)
            lead = next((i for i, x in enumerate(ok) if not x), len(ok))
            self.progress = start + lead  # published only after those pages are fully written
            if lead < len(ok):
                return


def call_pages(store: Any) -> int:
    """Pages per fetch call of `store` (`KVStore.call_pages`; a store object without it gets the default)."""
    return int(getattr(store, "call_pages", DEFAULT_CALL_PAGES))
