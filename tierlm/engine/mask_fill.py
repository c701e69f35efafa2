"""`MaskFill`: how a pass's grammar masks are filled (`engine.guided`): one row after another on the calling thread,
or side by side on xgrammar's threads (`BatchGrammarMatcher`) where that pays.

A row's fill walks its grammar's state over the vocabulary: inside a JSON string, where most tokens are allowed,
it takes far longer than between fields. Starting the threads has a cost of its own, larger than a pass of cheap
rows takes on one thread, so the rows go side by side only when there are several of them and their last fill on
the calling thread says they would take longer than `min_batch_s`; every `refresh`-th pass is filled on the
calling thread again to measure them anew.
"""
from __future__ import annotations

import time
from typing import Any, Sequence


class MaskFill:
    """Fills `bitmask` rows 0..n-1 from n matchers, choosing one thread or several pass by pass."""

    BATCH_ROWS = 8  # fewer rows are always filled on the calling thread

    def __init__(self, threads: int, min_batch_s: float = 0.002, refresh: int = 16) -> None:
        """`threads`: xgrammar's fill threads (1 or less: always the calling thread)."""
        self.threads = threads
        self.min_batch_s = min_batch_s
        self.refresh = refresh
        self.row_s = 0.0  # one row's fill on the calling thread, as last measured
        self.passes = 0
        self.side_by_side = 0  # passes filled on the threads (for tests and benchmarks)
        self._batch: Any = None

    def __call__(self, matchers: Sequence[Any], bitmask: Any) -> None:
        self.passes += 1
        n = len(matchers)
        if (self.threads > 1 and n >= self.BATCH_ROWS and self.row_s * n >= self.min_batch_s
                and self.passes % self.refresh):
            if self._batch is None:
                import xgrammar as xgr

                self._batch = xgr.BatchGrammarMatcher(self.threads)
            self._batch.batch_fill_next_token_bitmask(list(matchers), bitmask)
            self.side_by_side += 1
            return
        start = time.perf_counter()
        for j, m in enumerate(matchers):
            m.fill_next_token_bitmask(bitmask, j)
        self.row_s = (time.perf_counter() - start) / max(n, 1)
