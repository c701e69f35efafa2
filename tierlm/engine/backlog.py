"""`prefill_backlog`: how many prefill tokens stand in front, counted the way the scheduler asks each step."""
from __future__ import annotations

from typing import Iterable

from tierlm.engine.request import Req


def prefill_backlog(running: Iterable[Req], waiting: Iterable[Req], cap: int, waiting_expected: bool = False) -> int:
    """The running requests' prefill tokens left, then each waiting one's (its `expected_prefill` with
    `waiting_expected`, else its `extend_len`), summed until the sum reaches `cap` (the caller looks no
    further). It runs every step and on every arrival over long queues, so `prefilling` and `extend_len` are
    spelled out rather than called."""
    total = 0
    for queue, expected in ((running, False), (waiting, waiting_expected)):
        for req in queue:
            if not req.decodable:  # prefilling
                total += req.expected_prefill if expected else len(req.token_ids) + req.num_pending - req.kv_len
                if total >= cap:
                    return total
    return total
