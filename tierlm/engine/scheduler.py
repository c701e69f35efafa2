"""`Scheduler`: continuous batching with reservation-based admission and chunked prefill.

Admission policy (documented choice): a request is admitted only when the KV pages for its whole budget
(prompt + max_new_tokens) fit next to the remaining budgets of the running requests, counting free pages
plus evictable prefix-cache pages. A running request therefore never runs out of KV, so there is no
preemption or recompute path; requests that do not fit wait in FIFO order. A request that could not fit
even in an empty pool is refused with an error.

Each step is either a prefill step (continue chunked prefills, then admit waiting requests, under a
per-step token budget) or a decode step (one token for every running request).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Optional

from tierlm.engine.request import Req
from tierlm.kvcache.manager import KVCacheManager


@dataclass
class ScheduledBatch:
    """Requests of one forward pass and how many new tokens each contributes (`extend_lens`)."""

    mode: str  # "prefill" | "decode"
    reqs: list[Req]
    extend_lens: list[int]
    # request→token table entries to write on the device before the pass: (row, position) -> slot
    map_rows: list[int] = field(default_factory=list)
    map_positions: list[int] = field(default_factory=list)
    map_slots: list[int] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return sum(self.extend_lens)


class Scheduler:
    """Owns the waiting queue and the running set, and all KV allocation decisions for them."""

    def __init__(self, kv: KVCacheManager, max_running: int, max_prefill_tokens: int) -> None:
        self.kv = kv
        self.max_running = max_running
        self.max_prefill_tokens = max_prefill_tokens
        self.waiting: deque[Req] = deque()
        self.running: list[Req] = []
        self._writes: tuple[list[int], list[int], list[int]] = ([], [], [])

    # ---- queue management ------------------------------------------------------------------------------
    def add(self, req: Req) -> None:
        self.waiting.append(req)
        self.kv.prefetch_start(req.request_id, req.token_ids[:req.prompt_len - 1])  # L3 -> host, in background

    def find(self, request_id: str) -> Optional[Req]:
        for req in self.running:
            if req.request_id == request_id:
                return req
        for req in self.waiting:
            if req.request_id == request_id:
                return req
        return None

    def remove(self, req: Req, cache: bool) -> None:
        """Take `req` out of the scheduler and release its KV at once (into the prefix cache if `cache`)."""
        if req in self.running:
            self.running.remove(req)
            self.kv.release(req.token_ids[:min(req.kv_len, len(req.token_ids))], req.pages, req.prefix_node, req.num_prefix_pages,
                            cache=cache)
            self.kv.req_table.free_row(req.row)
            req.pages, req.prefix_node, req.row = [], None, None
        elif req in self.waiting:
            self.waiting.remove(req)
            self.kv.prefetch_cancel(req.request_id)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    # ---- batch building --------------------------------------------------------------------------------
    def _reserved_pages(self) -> int:
        return sum(self.kv.pages_for(r.max_seq_len) - len(r.pages) for r in self.running)

    def _grow(self, req: Req, n: int) -> None:
        """Make sure positions up to `req.kv_len + n` have pages and table entries."""
        start, end = req.kv_len, req.kv_len + n
        missing = self.kv.pages_for(end) - len(req.pages)
        if missing > 0:
            pages = self.kv.alloc(missing)
            if pages is None:  # reservation makes this unreachable; fail loudly rather than corrupt KV
                raise RuntimeError(f"KV allocation of {missing} pages failed despite reservation")
            req.pages.extend(pages)
        self._map(req.row, req.pages, start, end)

    def _map(self, row: int, pages: list[int], start: int, end: int) -> None:
        """Queue table entries for positions [start, end) of `row` (written by the runner in one scatter)."""
        ps = self.kv.page_size
        rows, positions, slots = self._writes
        rows.extend([row] * (end - start))
        positions.extend(range(start, end))
        slots.extend(pages[p // ps] * ps + p % ps for p in range(start, end))

    def _try_admit(self, req: Req) -> str:
        """'ok' (admitted), 'wait' (no room now), 'never' (cannot fit even in an empty pool) or 'prefetch'
        (its L3 prefetch is still running: skip it, the requests behind it may go first)."""
        kv = self.kv
        if kv.pages_for(req.max_seq_len) > kv.capacity_pages:
            return "never"
        if len(self.running) >= self.max_running or kv.req_table.num_free_rows == 0:
            return "wait"
        if not kv.prefetch_ready(req.request_id):
            return "prefetch"
        # Match at most prompt_len - 1 tokens: the last prompt token must run to produce logits.
        match = kv.match_and_lock(req.token_ids[:req.prompt_len - 1])
        matched = match.pages if match else []
        to_load = match.num_host_pages if match else 0  # host-only part of the match: loaded back now
        need = kv.pages_for(req.max_seq_len) - len(matched) - to_load
        if need + to_load + self._reserved_pages() > kv.available_pages():
            kv.unlock(match.node if match else None)
            return "wait"
        if to_load:
            loaded = kv.load_back(match)
            if loaded is None:  # the check above makes this unreachable; recover by waiting
                kv.unlock(match.node)
                return "wait"
            matched = loaded
        kv.note_admitted(req.request_id, match)
        req.row = kv.req_table.alloc_row()
        req.pages = list(matched)
        req.prefix_node = match.node if match else None
        req.num_prefix_pages = len(matched)
        req.kv_len = req.num_cached_tokens = len(matched) * kv.page_size
        self._map(req.row, req.pages, 0, req.kv_len)
        self.running.append(req)
        return "ok"

    def schedule(self) -> tuple[Optional[ScheduledBatch], list[Req]]:
        """Next batch to run (or None) and requests refused because they can never fit."""
        refused: list[Req] = []
        self._writes = ([], [], [])
        self.kv.poll()
        budget = self.max_prefill_tokens
        reqs, lens = [], []
        for req in self.running:
            if req.prefilling and budget > 0:
                n = min(req.extend_len, budget)
                reqs.append(req), lens.append(n)
                budget -= n
        i = 0
        while i < len(self.waiting) and budget > 0:
            req = self.waiting[i]
            verdict = self._try_admit(req)
            if verdict == "prefetch":
                i += 1
                continue
            if verdict == "wait":
                break
            del self.waiting[i]
            if verdict == "never":
                self.kv.prefetch_cancel(req.request_id)
                refused.append(req)
                continue
            n = min(req.extend_len, budget)
            reqs.append(req), lens.append(n)
            budget -= n
        if reqs:
            for req, n in zip(reqs, lens):
                self._grow(req, n)
            return ScheduledBatch("prefill", reqs, lens, *self._writes), refused
        decoding = [r for r in self.running if not r.prefilling and not r.fully_scheduled and not r.finished]
        if not decoding:
            if self.waiting:
                self.kv.idle_wait(0.002)  # only prefetching requests left: let their I/O progress
            return None, refused
        for req in decoding:
            self._grow(req, 1)
        return ScheduledBatch("decode", decoding, [1] * len(decoding), *self._writes), refused
