"""`SplitFetches`: L3 hits served by recomputing their head while their tail is fetched, both at once.

When the cost model finds that neither fetching a waiting request's whole L3 hit nor recomputing all of it
is as fast as doing both on their own resources (`CostModel.both_head`), the prefetcher fetches only the
tail of the hit into host pages and the request is admitted at once. The scheduler runs its prefill only up
to the pause point (the end of the recomputed head, a page boundary). There, once the tail has arrived, the
request rejoins: it is retracted, so its KV enters the prefix cache, the tail's host pages are inserted
under it as host-only nodes, and its re-admission matches both, loading the tail like an L2 hit beside the
rest of the prefill. A tail that fails, or has not arrived by its deadline when the head is done, is
dropped and the request computes on: a split never waits longer than its prediction allows.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Optional


@dataclass(eq=False)
class Tail:
    """One request's tail fetch: the prefetch op (its `head` pages are recomputed), where the request
    pauses (tokens) and until when it waits there for the tail."""

    op: Any
    pause: int
    deadline: float


class SplitFetches:
    """Tails in flight per request. `adopt(op)` inserts a complete op's pages into the tree (returns the
    pages kept), `drop(op)` cancels it and frees its pages once the store call ends."""

    def __init__(self, page_size: int, adopt: Callable[[Any], int], drop: Callable[[Any], None]) -> None:
        self.page_size = page_size
        self._adopt, self._drop = adopt, drop
        self.tails: dict[str, Tail] = {}
        self.own_tokens: dict[str, int] = {}  # per rejoined request: its own leading tokens (counted already)
        self.rejoined = 0
        self.dropped = 0

    @property
    def held_pages(self) -> list[int]:
        return [p for t in self.tails.values() for p in t.op.host_pages]

    def add(self, req_id: str, op: Any, wait_s: float) -> None:
        """`op` fetches the tail; the request pauses after its head and waits at most `wait_s` from now."""
        pause = (op.first_page + op.head) * self.page_size
        self.tails[req_id] = Tail(op, pause, time.monotonic() + wait_s)

    def pause_at(self, req_id: str) -> Optional[int]:
        """Tokens of KV the request computes before it waits for its tail (None: no tail)."""
        tail = self.tails.get(req_id)
        return tail.pause if tail is not None else None

    def state(self, req_id: str) -> str:
        """'done' (every tail page arrived), 'pending' (still fetching, within its deadline) or 'failed'."""
        op = self.tails[req_id].op
        if op.fetch.done():
            return "done" if op.fetch.exception() is None and op.progress == len(op.host_pages) else "failed"
        return "pending" if time.monotonic() < self.tails[req_id].deadline else "failed"

    def rejoin(self, req_id: str) -> int:
        """After the request's head entered the prefix cache: its tail joins the tree under it. Returns the
        tail tokens kept (duplicates of pages the tree gained meanwhile are freed)."""
        tail = self.tails.pop(req_id)
        kept = self._adopt(tail.op)
        self.own_tokens[req_id] = tail.pause
        self.rejoined += 1
        return kept * self.page_size

    def drop(self, req_id: str) -> None:
        """Give up the request's tail (failed, late, or the request ended): it computes those tokens."""
        tail = self.tails.pop(req_id, None)
        self.own_tokens.pop(req_id, None)
        if tail is not None:
            self._drop(tail.op)
            self.dropped += 1

    def drain(self) -> None:
        for req_id in list(self.tails):
            self.drop(req_id)
