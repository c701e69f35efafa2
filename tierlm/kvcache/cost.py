"""Load or recompute: how much of a lower-tier KV hit to load, from what each path costs on this machine.

A prefix hit in host memory (L2) or in the L3 store saves recomputing its tokens but costs a transfer. Which
is cheaper depends on the machine (PCIe, disk, network) and on the model (its prefill speed and KV bytes per
token), so both are measured online: the prefill rate from the engine's prefill steps and the bandwidth of
each tier from its transfers (`CostModel`, ratios of exponentially weighted sums, so large transfers and
large steps weigh more than small ones). On CUDA the start-up measures the prefill rate once
(`calibrate_prefill`). Until a path has been measured its prior makes loading win: a new engine behaves as
if every hit were worth loading, except for an L3 store, which background probes (one at a time) measure
while the requests recompute, until `MIN_STORE_SAMPLES` reads are timed (a store found slow must not have
delayed anyone, and one fast read is no proof).

Prefix matching takes the leading pages of a prompt, so the split is: load the first `m` pages of the hit,
recompute the rest together with the request's new tokens (`split`). Host-to-device loads run beside the
prefill layer by layer (`tierlm.kvcache.transfer`), so a step takes about
    T(m) = max(c * W(m), l * (L0 + m))            W(m) = K + (H - m) * page_size
with `c` seconds per computed token, `l` seconds per loaded page, `H` hit pages, `K` tokens the step computes
anyway (this request's new tokens and the requests admitted before it) and `L0` pages it loads anyway. With
a per-step token budget `S` the tokens beyond it run in later steps, where nothing overlaps them:
    T(m) = max(c * min(W, S), l * (L0 + m)) + c * max(0, W - S).
An L3 fetch finishes before its request is admitted, so the compute does not hide it: T(m) = l * (Q + m) +
c * W(m), where Q are the pages of the fetches already queued on the store (it serves them first: the first
wave after a restart must not all wait on one disk), and the answer is all or nothing, unless the fetch runs
beside the compute instead: recompute the hit's head while its tail is fetched (`both_head`, carried out by
`tierlm.kvcache.split_fetch`). A request queued behind others' prefill waits for its first step anyway: what
the store returns in that wait (`queue_wait`, `hidden_pages`) is free to it, however slow the store. T is
piecewise linear in m, so its minimum lies at an end or at a breakpoint; among the splits within `margin` of
the minimum the one that loads most wins (a load costs the device no compute, which the next steps can use).
"""
from __future__ import annotations

import math
from typing import Mapping, Optional

from tierlm.kvcache.rate import Rate

POLICIES = ("auto", "cost", "always-load")
TIERS = ("L2", "L3")
PRIOR_PREFILL_TOKENS_PER_S = 1e3  # slow compute and
PRIOR_LOAD_BYTES_PER_S = 1e12  # fast loads: before any measurement, loading wins
MARGIN = 0.05  # a split must save more than this share of the step time to recompute instead of loading
BOTH_MARGIN = 0.25  # a split must save this share of the faster path's time: it costs a lookup wait, a pause
# and a second pass, which the model prices only by the prefill waiting when the request arrives
EXPLORE_EVERY = 32  # a tier whose hits went unloaded this many times is loaded once, to measure it again
# timed store reads before the L3 estimate decides anything: one read may come from the page cache (or a
# quiet disk) and look many times faster than the store serves under load
MIN_STORE_SAMPLES = 4


def step_seconds(m: int, hit_pages: int, page_size: int, tokens: int, s_per_token: float, s_per_page: float,
                 load_pages: int = 0, max_step_tokens: int = 0, overlap: bool = True) -> float:
    """Modelled time of a step that loads the first `m` of `hit_pages` pages and computes the rest plus
    `tokens` (see the module doc; `max_step_tokens` 0: no per-step budget)."""
    work = tokens + (hit_pages - m) * page_size
    if not overlap:
        return s_per_page * (load_pages + m) + s_per_token * work
    now = min(work, max_step_tokens) if max_step_tokens > 0 else work
    return max(s_per_token * now, s_per_page * (load_pages + m)) + s_per_token * (work - now)


def split(hit_pages: int, page_size: int, tokens: int, s_per_token: float, s_per_page: float,
          load_pages: int = 0, max_step_tokens: int = 0, overlap: bool = True, margin: float = 0.0) -> int:
    """Pages of a `hit_pages` hit to load (the first ones; the rest are recomputed) so that the step is
    fastest: `tokens` are computed in the step anyway, `load_pages` loaded anyway; `s_per_token` and
    `s_per_page` are the costs of computing one token and loading one page. Ties and splits within
    `margin` (a fraction of the best time) go to loading more."""
    if hit_pages <= 0:
        return 0
    if s_per_page <= 0:
        return hit_pages

    def t(m: int) -> float:
        return step_seconds(m, hit_pages, page_size, tokens, s_per_token, s_per_page, load_pages,
                            max_step_tokens, overlap)

    c, l, total = s_per_token, s_per_page, tokens + hit_pages * page_size
    points = [0.0, float(hit_pages)]
    if overlap:
        points.append((c * total - l * load_pages) / (c * page_size + l))  # compute meets load
        if max_step_tokens > 0:
            points.append((total - max_step_tokens) / page_size)  # the step's budget is full
            points.append(c * max_step_tokens / l - load_pages)  # a full step meets load
    cands = sorted({min(hit_pages, max(0, f(x))) for x in points for f in (math.floor, math.ceil)})
    times = [t(m) for m in cands]
    bound = min(times) * (1 + margin) + 1e-12
    best = max(i for i, x in enumerate(times) if x <= bound)
    # between neighbouring candidates T is linear: walk up into the next segment as far as the bound allows
    if best + 1 < len(cands) and times[best + 1] > times[best]:
        lo, hi = cands[best], cands[best + 1]
        return lo + int((bound - times[best]) / (times[best + 1] - times[best]) * (hi - lo))
    return cands[best]


class CostModel:
    """What prefill and each tier's transfers cost, measured online, and the per-request decisions taken
    from it (see the module doc). `policy` "always-load" keeps the measurements but loads every hit; "auto"
    is "cost" where loads `overlap` the prefill (asynchronous copies), else "always-load". `overlap` False
    models synchronous copies (their time adds to the step's). Single-threaded: the scheduler's thread
    observes and decides."""

    def __init__(self, page_size: int, page_bytes: int, policy: str = "cost", overlap: bool = True,
                 max_step_tokens: int = 0, margin: float = MARGIN, explore_every: int = EXPLORE_EVERY) -> None:
        if policy not in POLICIES:
            raise ValueError(f"--hicache-load-policy: unknown policy {policy!r} (choose from {', '.join(POLICIES)})")
        if policy == "auto":  # weighing loads against compute needs loads that run beside the compute
            policy = "cost" if overlap else "always-load"
        self.page_size, self.page_bytes = page_size, page_bytes
        self.policy, self.overlap, self.max_step_tokens = policy, overlap, max_step_tokens
        self.margin, self.explore_every = margin, explore_every
        self.learn = True
        self.prefill = Rate(PRIOR_PREFILL_TOKENS_PER_S)  # tokens per second
        self.loads = {tier: Rate(PRIOR_LOAD_BYTES_PER_S) for tier in TIERS}  # bytes per second
        self._unloaded = {tier: 0 for tier in TIERS}  # decisions in a row that loaded nothing
        self.backlog_tokens = 0  # prefill tokens waiting or under way for other requests (`observe_backlog`)

    # ---- measurements ------------------------------------------------------------------------------------------
    def observe_prefill(self, tokens: int, seconds: float) -> None:
        """A prefill step (with no loads beside it) computed `tokens` new tokens in `seconds`."""
        if self.learn:
            self.prefill.observe(tokens, seconds)

    def observe_backlog(self, tokens: int) -> None:
        """The prefill tokens waiting or under way when the scheduler last looked: a split request's tail
        rejoins behind them (`both_head`)."""
        self.backlog_tokens = max(0, tokens)

    def observe_load(self, tier: str, nbytes: int, seconds: float) -> None:
        """`nbytes` came from `tier` in `seconds` (L2: host to device; L3: store to host)."""
        if self.learn:
            self.loads[tier].observe(nbytes, seconds)

    def calibrate_prefill(self, tokens: int, seconds: float) -> None:
        """Start the compute rate from a measured prefill (the engine's start-up): replaces the prior and any
        earlier samples, which may include first-use work."""
        if self.learn and tokens > 0 and seconds > 0:
            self.prefill = Rate(PRIOR_PREFILL_TOKENS_PER_S)
            self.prefill.observe(tokens, seconds)

    def fix(self, prefill_tokens_per_s: float, load_bytes_per_s: Mapping[str, float],
            overlap: Optional[bool] = None) -> None:
        """Pin the costs (and stop measuring): for tests and experiments."""
        self.learn = False
        self.prefill.set(prefill_tokens_per_s)
        for tier, value in load_bytes_per_s.items():
            self.loads[tier].set(value)
        if overlap is not None:
            self.overlap = overlap

    @property
    def s_per_token(self) -> float:
        return 1.0 / self.prefill.value

    def s_per_page(self, tier: str) -> float:
        return self.page_bytes / self.loads[tier].value

    def fetch_seconds(self, pages: int) -> Optional[float]:
        """Predicted seconds for the store to return `pages` pages; None where no measurement backs a
        prediction (the store unmeasured, or "always-load", which does not weigh the store's speed)."""
        if self.policy == "always-load" or not self.loads["L3"].samples:
            return None
        return pages * self.s_per_page("L3")

    def store_measured(self) -> bool:
        """Whether the L3 estimate rests on enough timed reads to act on (`MIN_STORE_SAMPLES`; one, for
        costs pinned by `fix`)."""
        return self.loads["L3"].samples >= (MIN_STORE_SAMPLES if self.learn else 1)

    def _s_per_fetched_page(self) -> float:
        """Seconds a page fetched from the store costs its request: the read, and where copies do not overlap
        the compute also its load to the device."""
        return self.s_per_page("L3") + (0.0 if self.overlap else self.s_per_page("L2"))

    # ---- decisions ---------------------------------------------------------------------------------------------
    def load_pages(self, hit_pages: int, tokens: int, step_tokens: int = 0, step_load_pages: int = 0) -> int:
        """Of a request's `hit_pages` host pages, how many (the first) to load to the device; the request
        computes `tokens` new tokens, the step `step_tokens` and loads `step_load_pages` for the requests
        admitted before it."""
        if self.policy == "always-load" or hit_pages <= 0:
            return hit_pages
        m = split(hit_pages, self.page_size, tokens + step_tokens, self.s_per_token, self.s_per_page("L2"),
                  step_load_pages, self.max_step_tokens, self.overlap, self.margin)
        if m > 0:
            self._unloaded["L2"] = 0
            return m
        return hit_pages if self._explore("L2") else 0

    def fetch_pages(self, hit_pages: int, tokens: int, queued_pages: int = 0) -> int:
        """Of `hit_pages` pages the L3 store holds for a waiting request (which computes `tokens` more),
        how many (the first) to fetch, with `queued_pages` of other fetches ahead of it on the store;
        nothing hides a fetch, it delays the request."""
        if self.policy == "always-load" or hit_pages <= 0:
            return hit_pages
        per_page = self._s_per_fetched_page()
        m = split(hit_pages, self.page_size, tokens, self.s_per_token, per_page, overlap=False, margin=self.margin)
        # the queue delays any fetch at all: it pays only if T(m) = l * (Q + m) + c * W(m) < c * W(0)
        c = self.s_per_token * self.page_size
        if m and queued_pages and per_page * (queued_pages + m) >= c * m * (1 - self.margin):
            return 0
        return m

    def both_head(self, hit_pages: int, queued_pages: int = 0, own_tokens: int = 0) -> int:
        """Of `hit_pages` pages the L3 store holds for a waiting request (of `own_tokens` prefill tokens),
        how many leading ones to recompute while the rest are fetched beside that compute (then loaded like
        an L2 hit), with `queued_pages` of other fetches ahead on the store; 0: no split (fetching or
        recomputing all of it is within BOTH_MARGIN of doing both). The two run on different resources
        (device and store), so the split where they take equally long beats either alone:
            T(m) = max(c * m, l * (Q + H - m)) + c * K,   m* = l * (Q + H) / (c + l),
        where c * K is the price of the second pass a split takes: the request's tail rejoins in a later
        step, which also computes the other requests' prefill work (K: the backlog without this request's
        own tokens, up to one step's budget), while a recompute or a whole fetch finishes in one step."""
        if self.policy == "always-load" or hit_pages < 2 or not self.store_measured():
            return 0
        c = self.s_per_token * self.page_size  # per recomputed page
        per_fetch = self._s_per_fetched_page()
        m = min(hit_pages - 1, max(1, round(per_fetch * (queued_pages + hit_pages) / (c + per_fetch))))
        backlog = max(0, self.backlog_tokens - own_tokens)
        if self.max_step_tokens:
            backlog = min(backlog, self.max_step_tokens)
        both = max(c * m, per_fetch * (queued_pages + hit_pages - m)) + self.s_per_token * backlog
        alone = min(c * hit_pages, per_fetch * (queued_pages + hit_pages))
        return m if both < alone * (1 - BOTH_MARGIN) else 0

    def queue_wait(self, ahead_tokens: int) -> float:
        """Seconds a request arriving behind `ahead_tokens` of other requests' prefill work waits until its
        admission: the whole steps that work fills (what is left of the last one runs beside this request)
        but one, since a step is scheduled while the one before it runs (overlap scheduling)."""
        s = self.max_step_tokens
        whole = max(0, ahead_tokens // s - 1) * s if s > 0 else ahead_tokens
        return whole * self.s_per_token

    def hidden_pages(self, wait_s: float, queued_pages: int = 0) -> int:
        """Pages the store can return within `wait_s`, after the `queued_pages` of the fetches ahead: pages a
        request fetches while it waits for its first step anyway cost it nothing, whether or not the store is
        faster than recomputing them (0 while the store is not measured enough)."""
        if self.policy == "always-load" or wait_s <= 0 or not self.store_measured():
            return 0
        return max(0, int(wait_s / self._s_per_fetched_page()) - queued_pages)

    def l3_plan(self, probing: bool = False) -> str:
        """What to do for a request that arrives: "fetch" (ask the store, then fetch what `fetch_pages`
        finds worth it, or split the hit by `both_head`), "skip" (a page fetches slower than it computes and
        a split would not pay: do not make the request wait even for the lookup) or "explore" (the store
        needs measuring: the request recomputes like "skip", and its lookup starts a background probe that
        fetches one store call of pages and times it). `probing`: a probe is in flight; there is never a
        second one, so measuring costs no request any wait and the store no more than one probe's reads at
        a time."""
        if self.learn and self.policy != "always-load" and not self.store_measured():
            return "skip" if probing else "explore"
        if self._fetch_pays():
            self._unloaded["L3"] = 0
            return "fetch"
        return "explore" if not probing and self._explore("L3") else "skip"

    def l3_pays(self) -> bool:
        """Whether a fetch from the L3 store, whole or split with a recompute, beats recomputing by the
        current estimates: False while the store is not yet measured enough (nothing says it pays yet), True
        under "always-load"."""
        if self.policy == "always-load":
            return True
        return self.store_measured() and self._fetch_pays()

    def _fetch_pays(self) -> bool:  # a whole fetch or a split pays (an unmeasured store counts at its prior)
        return self.fetch_pages(1, 1) > 0 or self.both_head(64) > 0

    def _explore(self, tier: str) -> bool:
        """Called for a decision that loads nothing from `tier`: a tier never loaded is never measured
        again, so every `explore_every`-th such decision in a row loads anyway (the machine may have
        changed: a warm page cache, a quieter network)."""
        if not self.learn or self.explore_every <= 0:
            return False
        self._unloaded[tier] += 1
        if self._unloaded[tier] < self.explore_every:
            return False
        self._unloaded[tier] = 0
        return True

    def snapshot(self) -> dict:
        """The policy and the current estimates (for `Engine.stats()` and /metrics)."""
        out = {"policy": self.policy, "overlap": self.overlap, "prefill_tokens_per_s": self.prefill.value,
               "prefill_samples": self.prefill.samples}
        for tier in TIERS:
            out[f"{tier}_bytes_per_s"] = self.loads[tier].value
            out[f"{tier}_samples"] = self.loads[tier].samples
        return out
