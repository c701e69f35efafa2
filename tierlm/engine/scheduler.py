"""`Scheduler`: continuous batching with reservation-based admission, chunked prefill and retraction.

Admission policy (documented choice): a request is admitted only when the KV pages for its prompt plus
`reserve_new_tokens` of output (all of max_tokens when that is 0 or smaller) fit next to the remaining
reservations of the running requests, counting free pages plus evictable prefix-cache pages; requests that
do not fit wait in the queue. With the whole budget reserved a running request never runs out of KV. A
request that outgrows its reservation when the pool is full is retracted instead: the newest running
request gives its KV to the prefix cache and goes back to the head of the queue, to be resumed (from the
cached prefix, recomputing the rest) when room returns. A request that could not fit even in an empty pool
is refused with an error. Which waiting request is tried first is the schedule policy's
(`tierlm.engine.policy`: fcfs, priority, lpm).

Each step is a prefill step (continue chunked prefills, then admit waiting requests in the order of the
schedule policy, under a per-step token budget), a decode step (one token for every running request) or, with
mixed steps on (`MixedBudget.max_tokens > 0`), a mixed step: the step's prefill work joins the decode tokens in
one extend pass under a smaller budget that counts them too (sized by the prefill backlog,
`tierlm.engine.mixed_budget`), so a new prompt does not stall every running decode for a step of its own. A
request whose L3 hit is split (`tierlm.kvcache.split_fetch`) prefills only up to its pause point until its
fetched tail has arrived, then rejoins through the queue's head.
"""
from __future__ import annotations

from typing import Any, Optional

from tierlm.engine.backlog import prefill_backlog
from tierlm.engine.batch import ScheduledBatch
from tierlm.engine.mixed_budget import MixedBudget
from tierlm.engine.policy import POLICIES, admission_order
from tierlm.engine.prompt_logprobs import match_limit
from tierlm.engine.request import Req
from tierlm.engine.reservation import BudgetPages, reservation, reserved_pages, target_len
from tierlm.engine.table_writes import TableWrites
from tierlm.engine.waiting import WaitingQueue
from tierlm.kvcache.contracts import Verdict
from tierlm.kvcache.manager import KVCacheManager


class Scheduler:
    """Owns the waiting queue and the running set, and all KV allocation decisions for them."""

    def __init__(self, kv: KVCacheManager, max_running: int, max_prefill_tokens: int,
                 reserve_new_tokens: int = 0, mixed: MixedBudget = MixedBudget(), policy: str = "fcfs") -> None:
        if policy not in POLICIES:
            raise ValueError(f"--schedule-policy: unknown policy {policy!r} (choose from {', '.join(POLICIES)})")
        self.kv = kv
        self.max_running = max_running
        self.max_prefill_tokens = max_prefill_tokens
        self.reserve_new_tokens = reserve_new_tokens
        self.mixed = mixed
        self.policy = policy
        self.num_retracted = 0
        self.num_guided = 0  # guided requests (`engine.guided`) queued or running: a pass may wait to sample
        self.waiting = WaitingQueue()
        self._by_id: dict[str, Req] = {}  # every request in `waiting` or `running` (ids are checked per arrival)
        self.running: list[Req] = []
        self._budgets = BudgetPages(kv.page_size)  # an upper bound of the running requests' reservations
        self._writes = TableWrites(kv.page_size)
        # the prefill backlog sizes mixed steps and feeds the tiers' cost model: without either it is not counted
        self._count_backlog = mixed.max_tokens > 0 or kv.cost is not None

    # ---- queue management ------------------------------------------------------------------------------
    def add(self, req: Req) -> None:
        # L3 -> host, in background (also while it waits behind what is ahead of it); a request kept out of the
        # caches (a warm-up) asks no store, so it neither waits for one nor takes the cost model's first probe; nor
        # does one that scores its prompt (it runs all of it)
        self.num_guided += req.guided
        whole = not req.cacheable or req.prompt_logprobs is not None
        req.expected_prefill = req.prompt_len if whole else self.kv.prefetch_start(
            req.request_id, req.token_ids[:req.prompt_len - 1], self._prefill_ahead)
        self.waiting.append(req)
        self._by_id[req.request_id] = req

    def _prefill_ahead(self, steps: int = 16) -> int:
        """Prefill tokens a request arriving now queues behind (the running ones' left, the waiting ones' as
        they arrived, beyond their L1/L2 match), at most `steps` steps' budget."""
        cap = steps * self.max_prefill_tokens
        return min(cap, prefill_backlog(self.running, (), cap) + self.waiting.expected_tokens)

    def find(self, request_id: str) -> Optional[Req]:
        """The waiting or running request of this id, or None."""
        return self._by_id.get(request_id)

    def remove(self, req: Req, cache: bool) -> None:
        """Take `req` out of the scheduler and release its KV at once (into the prefix cache if `cache`)."""
        if self._by_id.pop(req.request_id, None) is not None:
            self.num_guided -= req.guided
        if req in self.running:
            self._release(req, cache)
            splits = self._splits()
            if splits is not None:
                splits.drop_tail(req.request_id)
        elif req in self.waiting:
            self.waiting.remove(req)
            self.kv.prefetch_cancel(req.request_id)

    def _release(self, req: Req, cache: bool) -> None:
        self.running.remove(req)
        self._budgets.drop(req)
        self.kv.release(req.row, req.token_ids[:min(req.kv_len, len(req.token_ids))], req.pages,
                        req.prefix_node, req.num_prefix_pages, cache=cache)
        req.pages, req.prefix_node, req.row = [], None, None

    def _splits(self) -> Optional[Any]:
        """The L3 prefetcher when some request computes a head while its tail is fetched (else None)."""
        pf = getattr(self.kv, "prefetcher", None)
        return pf if pf is not None and pf.split.tails else None

    def _settle_splits(self) -> bool:
        """Requests paused after their recomputed head (`tierlm.kvcache.split_fetch`): rejoin those whose
        tail arrived (their KV to the prefix cache, the tail under it, back to the head of the queue), let
        those whose tail failed or is late compute on. Returns whether one still waits for its tail."""
        pf = self._splits()
        if pf is None:
            return False
        waiting = False
        for req in [r for r in self.running if r.request_id in pf.split.tails]:
            if req.kv_len < pf.split.pause_at(req.request_id):
                continue
            state = pf.split.state(req.request_id)
            if state == "pending":
                waiting = True
            elif state == "failed":
                pf.drop_tail(req.request_id)
            else:
                req.num_recomputed = req.kv_len - req.num_cached_tokens
                self._release(req, cache=True)
                pf.rejoin_tail(req.request_id)
                req.kv_len = req.num_prefix_pages = 0
                self.waiting.appendleft(req)
        return waiting

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    # ---- batch building --------------------------------------------------------------------------------
    def _grow(self, req: Req, n: int) -> bool:
        """Give positions up to `req.kv_len + n` pages; False if the pool is exhausted. A page's table entries
        are written as it is taken, all of them: every position below `len(req.pages) * page_size` has its entry
        (admission writes the matched pages' too), so a token that lands in a held page needs none."""
        ps = self.kv.page_size
        held = len(req.pages) * ps
        if req.kv_len + n > held:
            if not self.kv.grow(req.pages, req.kv_len + n):
                return False
            self._writes.pages_from(req.row, req.pages, held // ps)
        return True

    def _grow_or_retract(self, req: Req, n: int) -> bool:
        """Grow `req` by `n` tokens, retracting the newest running requests admitted after it while the pool is
        full (a pass grows its requests oldest first, so none it grew already is retracted); when none is left,
        retract `req` itself and return False."""
        while not self._grow(req, n):
            newer = self.running[self.running.index(req) + 1:]
            self._retract(newer[-1] if newer else req)
            if not newer:
                return False
        return True

    def _retract(self, req: Req) -> None:
        """Stop `req` for now: its KV goes to the prefix cache, it waits at the head of the queue."""
        self.remove(req, cache=req.cacheable)
        req.kv_len = req.num_prefix_pages = 0
        req.decodable = False
        self.waiting.appendleft(req)
        self._by_id[req.request_id] = req  # still the scheduler's
        self.num_retracted += 1

    def _try_admit(self, req: Req, reserved: int) -> str:
        """'ok' (admitted), 'wait' (no room now), 'never' (cannot fit even in an empty pool) or 'prefetch'
        (its L3 prefetch, or as a retracted request its last token, is still on the way: skip it, the
        requests behind it may go first)."""
        if len(self.running) >= self.max_running:
            return "wait" if self.kv.fits_ever(req.max_seq_len) else "never"
        # Match at most seq_len - 1 tokens: the last token must run to produce logits (and, with prompt logprobs,
        # every position not scored yet)
        got = self.kv.admit(req.request_id, req.token_ids[:match_limit(req)], target_len(req, self.reserve_new_tokens),
                            req.max_seq_len, reserved, ready=not req.num_pending)
        if isinstance(got, Verdict):
            return got.value
        req.row, req.pages, req.prefix_node = got.row, got.pages, got.node
        req.num_prefix_pages = got.num_prefix_pages
        req.kv_len = len(got.pages) * self.kv.page_size
        if req.first_token_time is None:  # a resumed (retracted) request keeps its first figure
            req.num_cached_tokens = req.kv_len - req.num_recomputed
        self._writes.pages_from(req.row, req.pages, 0)  # kv_len is the matched pages' whole length
        self.running.append(req)
        self._budgets.add(req)
        return "ok"

    def _decoding(self) -> list[Req]:
        """Running requests whose next input is in the device token table and that need another token (the
        properties spelled out: this runs over every running request every step)."""
        return [r for r in self.running if r.decodable and r.finish_reason is None
                and len(r.token_ids) + r.num_pending - r.prompt_len < r.max_new_tokens]

    def _prefill_work(self, budget: int, refused: list[Req]) -> tuple[list[Req], list[int]]:
        """Prefill chunks of at most `budget` tokens in all: running chunked prefills first, then waiting
        requests admitted in the order of the schedule policy. Adds never-fitting requests to `refused`."""
        reqs, lens = [], []
        for req in self.running:
            if not req.decodable and budget > 0:  # prefilling (spelled out: every running request, every step)
                n = self._chunk(req, budget)
                if n > 0:
                    reqs.append(req), lens.append(n)
                    budget -= n
        if not self.waiting or budget <= 0:
            return reqs, lens
        if self.policy != "fcfs":
            radix = self.kv.radix
            self.waiting.reorder(admission_order(self.policy, self.waiting, None if radix is None else
                                                 lambda r: radix.match_length(r.token_ids[:r.seq_len - 1])))
        # the running requests' reservations change only by this loop's admissions: summed once, when their bound
        # could change a verdict (with the running set full `_try_admit` never reads them)
        i, ps, extra, reserved = 0, self.kv.page_size, self.reserve_new_tokens, None
        while i < len(self.waiting) and budget > 0:
            req = self.waiting[i]
            if reserved is None and len(self.running) < self.max_running and not self._budgets.admits(
                    req, self.kv.available_pages(), extra):
                reserved = reserved_pages(self.running, ps, extra)
            verdict = self._try_admit(req, self._budgets.total if reserved is None else reserved)
            if verdict == Verdict.PREFETCHING.value:
                i += 1
                continue
            if verdict == "wait":
                break
            del self.waiting[i]
            if verdict == "never":
                self.kv.prefetch_cancel(req.request_id)
                self._by_id.pop(req.request_id, None)
                refused.append(req)
                continue
            if reserved is not None:
                reserved += reservation(req, ps, extra)
            n = self._chunk(req, budget)
            if n > 0:
                reqs.append(req), lens.append(n)
                budget -= n
        return reqs, lens

    def _chunk(self, req: Req, budget: int) -> int:
        """Tokens of `req`'s prefill for this pass: within the budget and, while its L3 tail is fetched, not
        beyond its recomputed head (0: it waits there)."""
        n = min(req.extend_len, budget)
        splits = self._splits()
        pause = splits.split.pause_at(req.request_id) if splits is not None else None
        return n if pause is None else min(n, pause - req.kv_len)

    def _grow_batch(self, reqs: list[Req], lens: list[int], ordered: bool) -> tuple[list[Req], list[int]]:
        """Pages (and table entries) for each request's tokens of a prefill or mixed pass, oldest running request
        first (`ordered`: `reqs` already are, as a prefill pass's are); when the pool is full the newest are
        retracted. A request whose tokens fit the pages it holds needs nothing here."""
        order = None if ordered else {id(r): i for i, r in enumerate(self.running)}
        pairs = zip(reqs, lens) if ordered else sorted(zip(reqs, lens), key=lambda item: order[id(item[0])])
        ps = self.kv.page_size
        grown: list[Req] = []
        kept_lens = []
        for req, n in pairs:
            if req.row is None:  # retracted to make room for an older request
                continue
            if req.kv_len + n > len(req.pages) * ps and not self._grow_or_retract(req, n):
                continue
            grown.append(req), kept_lens.append(n)
        return grown, kept_lens

    def _grow_decodes(self, decoding: list[Req]) -> list[Req]:
        """`_grow_batch` of a decode step (a token each, in running order): only the requests whose token starts a
        page take the allocation path (growing in running order, retracting the newest when the pool is full)."""
        ps = self.kv.page_size
        starting = [r for r in decoding if r.kv_len >= len(r.pages) * ps]
        for req in starting:
            if req.row is not None:  # else retracted to make room for an older request
                self._grow_or_retract(req, 1)
        return [r for r in decoding if r.row is not None] if starting else decoding

    def schedule(self) -> tuple[Optional[ScheduledBatch], list[Req]]:
        """Next batch to run (or None) and requests refused because they can never fit."""
        refused: list[Req] = []
        self._writes = TableWrites(self.kv.page_size)
        # prefill tokens waiting or prefilling (waiting ones whole), up to two steps' budget: enough to tell one
        # request's work from a full step beside it
        backlog = prefill_backlog(self.running, self.waiting, 2 * self.max_prefill_tokens) if self._count_backlog else 0
        self.kv.poll(backlog)
        paused = self._settle_splits()
        decoding = self._decoding()
        # mixed: the decodes ride along with the prefill work, if the budget leaves the prefill some room
        room = self.mixed.prefill_room(len(decoding), backlog)
        mixed = room is not None
        budget = min(room, self.max_prefill_tokens) if mixed else self.max_prefill_tokens
        reqs, lens = self._prefill_work(budget, refused)
        if reqs:
            if mixed:
                reqs, lens = reqs + decoding, lens + [1] * len(decoding)
            grown, kept_lens = self._grow_batch(reqs, lens, ordered=not mixed)
            if grown:
                decodes = sum(not r.prefilling for r in grown)
                mode = "decode" if decodes == len(grown) else "mixed" if decodes else "prefill"
                if mode == "mixed":  # the decodes end the pass, where the attention backends take decode kernels
                    order = sorted(range(len(grown)), key=lambda i: not grown[i].prefilling)
                    grown, kept_lens = [grown[i] for i in order], [kept_lens[i] for i in order]
                return ScheduledBatch(mode, grown, kept_lens, *self._writes.lists()), refused
            decoding = self._decoding()
        if not decoding:
            if self.waiting or paused:
                self.kv.idle_wait(0.002)  # only requests waiting for L3 pages left: let their I/O progress
            return None, refused
        batch = self._grow_decodes(decoding)
        if not batch:
            return None, refused
        return ScheduledBatch("decode", batch, [1] * len(batch), *self._writes.lists()), refused
