"""`L3Prefetcher`: brings a waiting request's prefix from the L3 store into host pages before admission.

Per request: (1) on arrival, ask the store on the L3 thread how many of the pages beyond the L1/L2 match
it holds; (2) if that reaches the threshold, take host pages and fetch them on the L3 thread in chunks;
(3) when the request is next considered for admission, the policy decides whether it is ready
(`best_effort`: always, with what has arrived; `wait_complete`: when the fetch ends; `timeout`: when it
ends or its deadline passes). Fetched pages join the radix tree as host-only nodes; the normal L2 path
then loads them. Unfinished or failed pages are never used: the request recomputes them. A request that
is not ready is skipped, never blocking the queue behind it. With a cost model (`tierlm.kvcache.cost`),
step (2) fetches only what is faster to fetch than to recompute, and the fetches' own timings are the
model's measure of the store; where recomputing the hit's head beside fetching its tail beats both, only
the tail is fetched and the request is admitted at once (`tierlm.kvcache.split_fetch`).

When the model wants the store measured, the request still recomputes and is admitted at once, like one
that skips the store (turning on an L3 must never make serving slower), and its lookup may become the
background probe (`tierlm.kvcache.store_probe`). The lookups of requests that do not wait for them (skip,
explore: counted as L3 hits recomputed) and the probe's fetch start only once the next step is launched
(`after_launch`), never beside the launch.
"""
from __future__ import annotations

import concurrent.futures as cf
import time
from typing import Any, Callable, Optional

from tierlm.kvcache.cost import CostModel
from tierlm.kvcache.keys import PageHasher, page_keys
from tierlm.kvcache.metrics import TierMetrics
from tierlm.kvcache.futures import finished
from tierlm.kvcache.graveyard import FetchGraveyard
from tierlm.kvcache.prefetch_op import PrefetchOp, call_pages
from tierlm.kvcache.split_fetch import SplitFetches
from tierlm.kvcache.store_probe import StoreProbe

# Under the `timeout` policy, a fetch the cost model chose because it beats recomputing is given up (the pages
# that arrived are used, the rest recomputed) once it runs this many times its predicted time, plus the slack:
# a store slower than measured (busy, or probed while idle) costs a bounded wait, not the policy's timeout.
LATE_FACTOR = 2.0
LATE_SLACK_S = 0.02


class L3Prefetcher:
    """Owns the prefetches and the probe in flight and the host pages they hold (`held_pages`, for leak
    checks). `host_free` says how many host pages are free now (a probe, and a fetch while queued, take only
    those: what costs nothing must not evict the host tier's copies); `lookup` runs
    store lookups (default: `submit`, which runs the page reads)."""

    def __init__(self, store: Any, submit: Callable[..., cf.Future], hasher: PageHasher,
                 alloc_host: Callable[[int], Optional[list[int]]], free_host: Callable[[list[int]], None],
                 radix: Any, metrics: TierMetrics, policy: str, timeout: float, threshold_tokens: int,
                 max_pages: int, cost: Optional[CostModel] = None,
                 host_free: Optional[Callable[[], int]] = None,
                 lookup: Optional[Callable[..., cf.Future]] = None) -> None:
        self.store, self._submit, self.hasher = store, submit, hasher
        self._lookup = lookup or submit  # where lookups run (apart from page reads, which take longer)
        self._alloc_host, self._free_host, self._host_free = alloc_host, free_host, host_free
        self.radix, self.metrics = radix, metrics
        self.policy, self.timeout = policy, timeout
        self.threshold_pages = max(1, -(-threshold_tokens // hasher.page_size))
        self.max_pages = max_pages  # host pages prefetches may hold at once
        self.ops: dict[str, PrefetchOp] = {}
        self._graveyard = FetchGraveyard(free_host)  # pages a cancelled fetch may still write
        self.fetched_tokens: dict[str, int] = {}  # per request, for hit attribution at admission
        self.unfetched_tokens: dict[str, int] = {}  # per request: L3 hits left to recompute
        self._counting: list[cf.Future] = []  # lookups of requests that recompute their L3 hit (for the counters)
        # per request: (first page, keys) hashed for its lookup, handed to the controller at admission so
        # that its release does not hash the same pages again (`page_keys`' `known`)
        self.arrival_keys: dict[str, tuple[int, list[str]]] = {}
        # per request whose lookup waits for the next step's launch: (prompt, first page, parent key, plan)
        self._deferred: dict[str, tuple[list[int], int, Optional[str], str]] = {}
        self.cost = cost
        self.split = SplitFetches(hasher.page_size, self._adopt, self._drop)
        self._probe = StoreProbe(lambda op: self._submit(op.read_from, self.store), alloc_host, free_host, host_free,
                                 lambda: self.max_pages - len(self.held_pages), self._keep_probe,
                                 self.threshold_pages, metrics, lambda: call_pages(self.store))

    @property
    def probe(self) -> Optional[PrefetchOp]:
        """The background measurement of the store, if one is in flight (`tierlm.kvcache.store_probe`)."""
        return self._probe.op

    @property
    def held_pages(self) -> list[int]:
        probe = self.probe.host_pages if self.probe is not None else []
        return ([p for op in self.ops.values() for p in op.host_pages] + probe + self.split.held_pages
                + self._graveyard.held_pages)

    def start(self, req_id: str, tokens: list[int], ahead_tokens: int = 0) -> int:
        """Ask the store about `tokens` (the part of the prompt that may be matched) if L1/L2 lack enough.
        Where the cost model does not fetch (skip, explore) the request does not wait for the store, so its
        hashing and lookup are held back until the next step is launched (`after_launch`); but where it
        waits behind `ahead_tokens` of other requests' prefill long enough for the store to return some of its
        hit, that part is fetched meanwhile ("hide"). Returns the prefill tokens the request brings (those
        beyond its L1/L2 match, and its last token)."""
        ps = self.hasher.page_size
        n_pages = len(tokens) // ps
        local, parent = self.radix.match_key(tokens)
        expected = len(tokens) + 1 - local * ps
        if n_pages - local < self.threshold_pages or req_id in self.ops:
            return expected
        plan = self.cost.l3_plan(self.probe is not None) if self.cost is not None else "fetch"
        wait_s = self.cost.queue_wait(ahead_tokens) if plan == "skip" else 0.0
        if wait_s and self.cost.hidden_pages(wait_s, self._queued_pages()) >= self.threshold_pages:
            plan = "hide"
        if plan not in ("fetch", "hide"):
            self._deferred[req_id] = (tokens, local, parent, plan)
            return expected
        op = self._lookup_op(tokens, local, parent)
        if plan == "hide":
            op.hidden_until = op.created + wait_s
            self.metrics.prefetch["hidden"] += 1
        self.arrival_keys[req_id] = (local, op.keys)
        self.ops[req_id] = op
        self.metrics.prefetch["started"] += 1
        return expected

    def _lookup_op(self, tokens: list[int], local: int, parent: Optional[str]) -> PrefetchOp:
        """Hash the whole pages of `tokens` beyond the `local` ones L1/L2 hold and start their lookup."""
        whole = tokens[:len(tokens) - len(tokens) % self.hasher.page_size]
        keys = page_keys(self.hasher, whole)(local, parent)
        return PrefetchOp(tokens=whole, keys=keys, first_page=local, created=time.monotonic(),
                          check=self._lookup(self.store.batch_exists, keys), prompt_len=len(tokens) + 1)

    def after_launch(self) -> None:
        """A step is on the device: start what was held back so that it never competes with the scheduler's
        thread while that launches a step (the device may be idle until it has): the lookups of requests that
        recompute their L3 hit (counted when they answer; the first of an "explore" starts the probe) and the
        probe's fetch. Their requests may have been admitted meanwhile; they never wait for these."""
        deferred, self._deferred = self._deferred, {}
        unmeasured = self.cost is not None and not self.cost.store_measured()
        for tokens, local, parent, plan in deferred.values():
            op = self._lookup_op(tokens, local, parent)
            self._counting.append(op.check)
            if plan == "explore" and self.probe is None:
                self._probe.begin(op)
            elif unmeasured:
                self._probe.offer(op)
        self._probe.next(measured=not unmeasured)
        self._probe.advance(start_fetch=True)

    def _advance(self, op: PrefetchOp) -> None:
        if op.fetch is not None or not op.check.done():
            return
        stored = op.check.result() if op.check.exception() is None else 0
        n = max(0, min(stored, self.max_pages - len(self.held_pages)))
        queued = self._queued_pages() if self.cost is not None and n > 0 else 0
        if op.hidden_until:  # what arrives before the request's turn (it does not wait for more)
            free = self._host_free() if self._host_free is not None else n
            n = min(n, free, self.cost.hidden_pages(op.hidden_until - time.monotonic(), queued))
        elif self.cost is not None and n > 0:
            if self.policy != "best_effort":
                op.head = self.cost.both_head(n, queued, op.prompt_len)  # recomputed while the rest is fetched
            n = n - op.head if op.head else self.cost.fetch_pages(
                n, len(op.tokens) - (op.first_page + n) * self.hasher.page_size + 1, queued)
        op.unfetched = stored  # until the fetch is under way
        if n < self.threshold_pages:
            op.head = 0
            op.check = finished(lambda: 0)
            op.fetch = finished(lambda: None)
            return
        pages = self._alloc_host(n)
        if pages is None:  # no host room: the request recomputes its hit
            op.fetch, op.head = finished(lambda: None), 0
            return
        op.unfetched = stored - n
        op.host_pages = pages
        now = time.monotonic()
        op.deadline = now + self.timeout + 0.1 * n * self.hasher.page_size / 1024
        predicted = self.cost.fetch_seconds(queued + n) if self.cost is not None else None
        if predicted is not None:  # a fetch chosen for its speed waits at most twice its predicted time
            op.deadline = min(op.deadline, now + LATE_FACTOR * predicted + LATE_SLACK_S)
        self.metrics.prefetch["pages_requested"] += n
        op.fetch = self._submit(op.read_from, self.store)

    def _queued_pages(self) -> int:
        """Pages that fetches under way (requests', split tails', the probe's) still have to read."""
        ops = [*self.ops.values(), *(t.op for t in self.split.tails.values()), self.probe]
        return sum(len(op.host_pages) - op.progress for op in ops
                   if op is not None and op.fetch is not None and not op.fetch.done())

    def _keep_probe(self, op: PrefetchOp) -> None:
        """A probe completed: time it for the cost model, keep the pages that arrived in the tree."""
        self._observe(op)
        self._free_host(op.host_pages[op.progress:])
        self._adopt(op)

    def poll(self) -> None:
        """Advance checks into fetches and the probe, free host pages of cancelled fetches that have stopped."""
        for op in self.ops.values():
            self._advance(op)
        self._probe.advance(start_fetch=False)
        self._graveyard.reap()
        for fut in [f for f in self._counting if f.done()]:
            self._counting.remove(fut)
            if fut.exception() is None:
                self.metrics.record_recomputed("L3", fut.result() * self.hasher.page_size)

    def pending(self) -> bool:
        return bool(self.ops)

    def ready(self, req_id: str) -> bool:
        """Whether the request may be admitted now; when it may, its fetched pages join the tree."""
        op = self.ops.get(req_id)
        if op is None:
            return True
        self._advance(op)
        if op.head and op.fetch is not None:  # admitted now: it computes its head while the tail arrives
            del self.ops[req_id]
            self.unfetched_tokens[req_id] = op.unfetched * self.hasher.page_size
            fetch_s = len(op.host_pages) * self.cost.s_per_page("L3")
            self.split.add(req_id, op, 2 * fetch_s + self.timeout)
            self.metrics.prefetch["split"] += 1
            return True
        now = time.monotonic()
        if self.policy == "best_effort" or op.hidden_until:
            ok = True
        elif op.fetch is None:  # still asking the store
            ok = self.policy == "timeout" and now > op.created + self.timeout
        else:
            ok = op.fetch.done() or (self.policy == "timeout" and now > op.deadline)
        if ok:
            self._finish(req_id, op)
        return ok

    def _finish(self, req_id: str, op: PrefetchOp) -> None:
        del self.ops[req_id]
        got = op.progress
        rest = op.host_pages[got:]
        if op.unfetched or rest:  # what stayed in the store, and what did not arrive in time
            self.unfetched_tokens[req_id] = (op.unfetched + len(rest)) * self.hasher.page_size
        if not op.host_pages:
            return
        self._observe(op)
        op.cancel.set()
        if rest:
            self.metrics.prefetch["partial"] += 1
            self._graveyard.bury(op.fetch, rest)
        kept = self._adopt(op)
        if kept:
            self.fetched_tokens[req_id] = kept * self.hasher.page_size

    def _adopt(self, op: PrefetchOp) -> int:
        """Insert the op's complete pages into the tree as host-only nodes, free the duplicates; returns
        the pages kept."""
        got = op.progress
        if not got:
            return 0
        ps = self.hasher.page_size
        first = op.first_page + op.head
        end = first + got
        keys = op.keys[op.head:op.head + got]
        dups = self.radix.insert_host(op.tokens[:end * ps], first, op.host_pages[:got], keys)
        self._free_host(dups)
        self.metrics.prefetch["discarded_pages"] += len(dups)
        self.metrics.prefetch["pages_fetched"] += got - len(dups)
        return got - len(dups)

    def _observe(self, op: PrefetchOp) -> None:
        if self.cost is not None and op.host_pages:
            pages, secs = op.timing
            self.cost.observe_load("L3", pages * self.cost.page_bytes, secs)

    def rejoin_tail(self, req_id: str) -> None:
        """The request's head is in the prefix cache: its fetched tail joins the tree under it (split)."""
        self._observe(self.split.tails[req_id].op)
        kept = self.split.rejoin(req_id)
        self.metrics.prefetch["split_rejoined"] += 1
        if kept:
            self.fetched_tokens[req_id] = kept

    def drop_tail(self, req_id: str) -> None:
        """Give up the request's tail (split): the request computes it."""
        if req_id in self.split.tails:
            self.split.drop(req_id)
            self.metrics.prefetch["split_dropped"] += 1

    def cancel(self, req_id: str) -> None:
        """Drop a request's prefetch (aborted or refused); its host pages are freed once unused."""
        self.fetched_tokens.pop(req_id, None)
        self.unfetched_tokens.pop(req_id, None)
        self.arrival_keys.pop(req_id, None)
        self._deferred.pop(req_id, None)
        self.split.drop(req_id)
        op = self.ops.pop(req_id, None)
        if op is None:
            return
        self.metrics.prefetch["cancelled"] += 1
        self._drop(op)

    def _drop(self, op: PrefetchOp) -> None:
        op.cancel.set()
        if op.host_pages:
            self._graveyard.bury(op.fetch, op.host_pages)

    def drain(self) -> None:
        """Cancel everything (the probe too) and wait until no fetch writes host pages (shutdown, tests)."""
        for req_id in list(self.ops):
            self.cancel(req_id)
        self._deferred.clear()
        self.split.drain()
        probe = self._probe.take()
        if probe is not None:
            self._drop(probe)
        self._graveyard.wait_all()
        self.poll()

