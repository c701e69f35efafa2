"""`WaitingQueue`: the requests waiting for admission, with the prefill they bring kept as a running sum."""
from __future__ import annotations

from collections import deque
from typing import Iterable, Iterator

from tierlm.engine.request import Req


class WaitingQueue:
    """The scheduler's waiting requests in the order they are tried, and `expected_tokens`, the sum of their
    `expected_prefill`. Every arrival asks how much prefill it queues behind; walking a queue of thousands
    of short requests for that made a burst of arrivals quadratic, so the sum is kept as requests come and
    go. A request's `expected_prefill` is set before it enters and never changes while it waits (the
    invariant the sum rests on). Only the operations the scheduler needs are offered, each keeping the sum."""

    def __init__(self, reqs: Iterable[Req] = ()) -> None:
        self._q: deque[Req] = deque(reqs)
        self.expected_tokens = sum(r.expected_prefill for r in self._q)

    def append(self, req: Req) -> None:
        self._q.append(req)
        self.expected_tokens += req.expected_prefill

    def appendleft(self, req: Req) -> None:
        self._q.appendleft(req)
        self.expected_tokens += req.expected_prefill

    def remove(self, req: Req) -> None:
        self._q.remove(req)
        self.expected_tokens -= req.expected_prefill

    def __delitem__(self, i: int) -> None:
        self.expected_tokens -= self._q[i].expected_prefill
        del self._q[i]

    def reorder(self, order: Iterable[Req]) -> None:
        """The same requests in another order (a schedule policy's)."""
        new = deque(order)
        if len(new) != len(self._q):
            raise ValueError(f"reorder: {len(new)} requests for a queue of {len(self._q)}")
        self._q = new

    def __getitem__(self, i: int) -> Req:
        return self._q[i]

    def __len__(self) -> int:
        return len(self._q)

    def __bool__(self) -> bool:
        return bool(self._q)

    def __iter__(self) -> Iterator[Req]:
        return iter(self._q)

    def __contains__(self, req: object) -> bool:
        return req in self._q
