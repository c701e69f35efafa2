"""Admission order of the waiting queue (`--schedule-policy`).

The queue itself is arrival order, except that a retracted request goes back to its head (it was admitted
before everything behind it). A policy only reorders it before an admission round; admission then walks
the new order and stops at the first request that does not fit (no request overtakes one that waits for
room, so none starves behind smaller ones).

- `fcfs`: the queue as it is.
- `priority`: the request's `priority`, lower first; within one priority the queue order (stable sort).
- `lpm` (longest prefix match, SGLang's name): most tokens already cached (any tier) first, so requests that
  share a prefix run while it is still cached; ties keep the queue order. Matching costs a walk of the radix
  tree per waiting request and step, so beyond `LPM_MAX_WAITING` requests (or without a prefix cache) the
  queue order is kept, as SGLang does.
"""
from __future__ import annotations

from typing import Callable, Iterable, Optional

from tierlm.engine.request import Req

POLICIES = ("fcfs", "priority", "lpm")
LPM_MAX_WAITING = 128


def admission_order(policy: str, waiting: Iterable[Req],
                    cached_len: Optional[Callable[[Req], int]] = None) -> list[Req]:
    """`waiting` in the order `policy` admits it; `cached_len(req)` is the length of its cached prefix
    (needed by `lpm` only)."""
    queue = list(waiting)
    if policy == "fcfs":
        return queue
    if policy == "priority":
        return sorted(queue, key=lambda r: r.params.priority)
    if policy == "lpm":
        if cached_len is None or len(queue) > LPM_MAX_WAITING:
            return queue
        lens = {id(r): cached_len(r) for r in queue}
        return sorted(queue, key=lambda r: -lens[id(r)])
    raise ValueError(f"--schedule-policy: unknown policy {policy!r} (choose from {', '.join(POLICIES)})")
