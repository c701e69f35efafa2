"""`prefill_backlog`: how many prefill tokens stand in front, counted the way the scheduler asks each step."""
from __future__ import annotations

from typing import Iterable

from tierlm.engine.request import Req


def prefill_backlog(running: Iterable[Req], waiting: Iterable[Req], cap: int) -> int:
    """The prefill tokens left of the running requests, then of the waiting ones (their `extend_len`), summed
    until the sum reaches `cap` (the caller looks no further). It runs every step over queues of hundreds, so
    `prefilling` and `extend_len` are spelled out rather than called."""
    total = 0
    for queue in (running, waiting):
        for req in queue:
            if not req.decodable:  # prefilling
                total += len(req.token_ids) + req.num_pending - req.kv_len
                if total >= cap:
                    return total
    return total
