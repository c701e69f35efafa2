"""Load or recompute (`tierlm.kvcache.cost`): the split a step's modelled time asks for, given the costs, and
the admission that applies it (loads the first pages of a host hit, leaves the rest to be recomputed)."""
from __future__ import annotations

import random
import time

import pytest
import torch

from tests.kvcache.tiers import make_tiered, run_copies
from tierlm.kvcache.cost import BOTH_MARGIN, MIN_STORE_SAMPLES, CostModel, split, step_seconds
from tierlm.kvcache.rate import Rate
from tierlm.kvcache.layout import KVLayout

C = 1e-4  # seconds per computed token in the cases below


def test_cheap_loads_load_the_whole_hit():
    assert split(10, 16, 100, C, s_per_page=C) == 10  # a page loads 16x faster than it computes
    assert split(10, 16, 100, C, s_per_page=0.0) == 10


def test_expensive_loads_recompute_the_whole_hit():
    assert split(10, 16, 100, C, s_per_page=1.0) == 0
    assert split(10, 16, 100, C, s_per_page=20 * C, overlap=False) == 0  # 20 > 16: slower than computing


def test_split_where_load_meets_compute():
    # a page costs as much to load as to compute: load 6 pages (96 tokens' time) beside 32 + 4 * 16 tokens
    assert split(10, 16, 32, C, s_per_page=16 * C) == 6
    t = [step_seconds(m, 10, 16, 32, C, 16 * C) for m in (5, 6, 7)]
    assert t[1] < t[0] and t[1] < t[2]


def test_margin_goes_to_loading():
    assert split(10, 16, 32, C, 16 * C, margin=0.2) == 7  # T(7) = 112 C <= 1.2 * 96 C < T(8) = 128 C


def test_loads_already_in_the_step_leave_less_to_hide():
    assert split(10, 16, 32, C, 16 * C, load_pages=4) < split(10, 16, 32, C, 16 * C)


def test_a_full_step_hides_nothing_more():
    # loading is twice as fast as computing: beside an uncapped step the best split recomputes some pages,
    # but when the step's token budget is already spent every recomputed token adds time
    assert 0 < split(10, 16, 32, C, 8 * C) < 10
    assert split(10, 16, 32, C, 8 * C, max_step_tokens=32) == 10


def test_without_overlap_it_is_all_or_nothing():
    assert split(10, 16, 5, C, 15 * C, overlap=False) == 10
    assert split(10, 16, 5, C, 17 * C, overlap=False) == 0


@pytest.mark.parametrize("seed", range(3))
def test_split_is_the_best_and_loads_most_within_margin(seed):
    rng = random.Random(seed)
    for _ in range(300):
        hit, ps, tokens = rng.randint(1, 60), rng.choice([1, 4, 16]), rng.randint(1, 3000)
        c, l = 10 ** rng.uniform(-6, -3), 10 ** rng.uniform(-6, -2)
        kw = dict(load_pages=rng.choice([0, 0, rng.randint(1, 50)]), max_step_tokens=rng.choice([0, 512, 2048]),
                  overlap=rng.random() < 0.8)
        margin = rng.choice([0.0, 0.05, 0.3])
        times = [step_seconds(m, hit, ps, tokens, c, l, **kw) for m in range(hit + 1)]
        bound = min(times) * (1 + margin) + 1e-12
        assert split(hit, ps, tokens, c, l, margin=margin, **kw) == max(m for m, t in enumerate(times) if t <= bound)


def test_rate_weighs_long_samples_more_and_starts_at_its_prior():
    r = Rate(prior=5.0)
    assert r.value == 5.0
    r.observe(100, 1.0)
    assert r.value == 100.0
    r.observe(1000, 100.0)  # one long slow sample
    assert r.value < 50


def test_model_loads_everything_until_measured():
    m = CostModel(16, 2 << 20)
    assert m.load_pages(100, 1) == 100 and m.fetch_pages(100, 1) == 100


def test_model_recomputes_from_a_slow_store_once_measured():
    m = CostModel(16, 2 << 20, overlap=True, explore_every=0)
    m.observe_prefill(10_000, 0.1)  # 100k tokens/s: a page computes in 0.16 ms
    m.observe_load("L3", 1 << 30, 1.0)  # 1 GiB/s: a page of 2 MiB fetches in 2 ms
    m.observe_load("L2", 50 << 30, 1.0)
    assert m.fetch_pages(100, 1) == 0
    assert m.load_pages(100, 1) > 80  # host memory is still worth loading (most of it)
    assert CostModel(16, 2 << 20, policy="always-load").fetch_pages(100, 1) == 100


def test_a_tier_left_unloaded_is_measured_again_now_and_then():
    m = CostModel(16, 2 << 20, explore_every=3)
    m.observe_prefill(10_000, 0.1)
    for _ in range(MIN_STORE_SAMPLES):
        m.observe_load("L3", 1 << 30, 1.0)  # slower than computing: requests skip the store ...
    assert [m.l3_plan() for _ in range(6)] == ["skip", "skip", "explore"] * 2  # ... but now and then
    assert m.fetch_pages(10, 1) == 0
    m.observe_load("L2", 1 << 20, 1.0)  # 1 MiB/s host memory: not worth loading either
    assert [m.load_pages(10, 1) for _ in range(3)] == [0, 0, 10]
    m.observe_load("L3", 1 << 40, 1.0)  # the store got fast
    assert m.l3_plan() == "fetch"
    m.fix(1e5, {"L3": 1 << 20, "L2": 1 << 20})  # pinned costs: no exploration
    assert {m.l3_plan() for _ in range(6)} == {"skip"} and {m.load_pages(10, 1) for _ in range(6)} == {0}


def test_an_unmeasured_store_is_probed_by_one_request_at_a_time():
    m = CostModel(16, 2 << 20)
    m.calibrate_prefill(10_000, 0.1)
    assert m.l3_plan(probing=False) == "explore" and m.l3_plan(probing=True) == "skip"
    assert CostModel(16, 2 << 20, policy="always-load").l3_plan(probing=True) == "fetch"
    m.observe_load("L3", 1 << 40, 1.0)  # one fast read (a page cache, say) is no proof: still probing
    assert m.l3_plan(probing=False) == "explore" and not m.l3_pays() and m.both_head(64) == 0
    for _ in range(MIN_STORE_SAMPLES - 1):
        m.observe_load("L3", 1 << 40, 1.0)
    assert m.l3_plan(probing=True) == "fetch" and m.l3_pays()  # measured: the cost decides, probing or not
    slow = CostModel(16, 2 << 20)
    slow.calibrate_prefill(10_000, 0.1)
    for _ in range(MIN_STORE_SAMPLES):
        slow.observe_load("L3", 1 << 30, 1.0)
    assert slow.l3_plan(probing=True) == slow.l3_plan(probing=False) == "skip" and not slow.l3_pays()


def test_calibration_replaces_the_prior_and_earlier_samples():
    m = CostModel(16, 2 << 20)
    m.observe_prefill(100, 10.0)  # a first step that paid for compilation
    m.calibrate_prefill(10_000, 0.1)
    assert m.prefill.value == pytest.approx(1e5) and m.prefill.samples == 1
    m.fix(1e3, {})
    m.calibrate_prefill(10_000, 0.1)  # pinned costs stay pinned
    assert m.prefill.value == pytest.approx(1e3)


def test_policy_names():
    assert CostModel(4, 64, "auto", overlap=True).policy == "cost"
    assert CostModel(4, 64, "auto", overlap=False).policy == "always-load"
    with pytest.raises(ValueError, match="--hicache-load-policy"):
        CostModel(4, 64, "sometimes")


def _host_only_prefix(kv, tokens):
    """Cache `tokens` (whole pages), back them up to host and drop the device copy."""
    pages = kv.alloc(len(tokens) // kv.page_size)
    kv.release(None, tokens, pages, None, 0, cache=True)
    run_copies(kv)
    kv.drop_device_cache()
    assert kv.radix.cached_pages == 0


def test_admission_loads_the_first_pages_and_leaves_the_rest_to_recompute():
    kv, _, _ = make_tiered(4, 33, 32, KVLayout.gqa(2, 1, 4, torch.float32), io_backend="torch",
                           load_policy="cost")
    try:
        tokens = list(range(40))  # 10 pages
        _host_only_prefix(kv, tokens)
        kv.cost.fix(1.0, {"L2": kv.cost.page_bytes / 4.0}, overlap=True)  # a page loads as fast as it computes
        prompt = tokens + [99, 98]
        got = kv.admit("r", prompt[:-1], len(prompt) + 4, len(prompt) + 4, 0)
        keep = len(got.pages)
        assert 0 < keep < 10 and got.num_prefix_pages == keep
        assert len(kv.copies.pending.load_host) == keep  # only the kept pages are loaded
        assert got.node.size and kv.radix.match_length(prompt) == 10  # the rest stays matchable on host
        st = kv.tier_stats()["L2"]
        assert (st["loaded_tokens"], st["recomputed_tokens"]) == (keep * 4, (10 - keep) * 4)
        run_copies(kv)
        kv.check_no_leak([got.pages])
        # the request recomputes the rest: its pages join the tree, the host-only nodes adopt them
        assert kv.grow(got.pages, len(prompt))
        kv.release(got.row, prompt, got.pages, got.node, got.num_prefix_pages, cache=True)
        kv.flush()
        kv.check_no_leak()
        assert kv.radix.match_prefix(prompt).num_host_pages == 0  # all 10 pages on the device again
    finally:
        kv.close()


def test_admission_with_always_load_loads_everything():
    kv, _, _ = make_tiered(4, 33, 32, KVLayout.gqa(2, 1, 4, torch.float32), io_backend="torch",
                           load_policy="always-load")
    try:
        tokens = list(range(40))
        _host_only_prefix(kv, tokens)
        kv.cost.fix(1.0, {"L2": 1.0}, overlap=True)  # costs that would recompute everything
        got = kv.admit("r", tokens + [7], 48, 48, 0)
        assert len(got.pages) == 10 and kv.tier_stats()["L2"]["recomputed_tokens"] == 0
        run_copies(kv)
        kv.release(got.row, tokens, got.pages, got.node, got.num_prefix_pages, cache=True)
        kv.check_no_leak()
    finally:
        kv.close()


class _Radix:
    def __init__(self) -> None:
        self.host: list[int] = []

    def match_key(self, tokens):
        return 0, None

    def insert_host(self, tokens, first_page, host_pages, hashes):
        self.host.extend(host_pages)
        return []


class _Store:
    """Holds every page asked about; fetches succeed."""

    def batch_exists(self, keys):
        return len(keys)

    def batch_get(self, keys, host_pages):
        time.sleep(1e-3)
        return [True] * len(keys)


def test_an_exploring_request_recomputes_and_its_probe_fetches_one_store_call_of_pages():
    from tierlm.kvcache.futures import finished
    from tierlm.kvcache.keys import PageHasher
    from tierlm.kvcache.metrics import TierMetrics
    from tierlm.kvcache.prefetch import L3Prefetcher
    from tierlm.kvcache.stores.base import DEFAULT_CALL_PAGES as CHUNK_PAGES  # a store without `call_pages`

    metrics, cost, radix = TierMetrics(), CostModel(4, 1 << 10), _Radix()
    pre = L3Prefetcher(_Store(), finished, PageHasher("t", 4), lambda n: list(range(n)), lambda pages: None,
                       radix, metrics, "wait_complete", 1.0, 4, 1000, cost)
    pre.start("probe", list(range(4 * (CHUNK_PAGES + 40))))  # an unmeasured store: this request explores
    assert pre.ready("probe") and metrics.prefetch["started"] == 0  # ... without waiting for it
    pre.after_launch()  # its lookup (held back from the step's launch) starts the probe
    pre.poll()
    pre.after_launch()  # the probe's fetch starts after a launch too
    assert metrics.prefetch["pages_requested"] == len(radix.host) == CHUNK_PAGES and cost.loads["L3"].samples == 1
    assert metrics.tiers["L3"]["recomputed_tokens"] == 4 * (CHUNK_PAGES + 40)
    for _ in range(MIN_STORE_SAMPLES - 1):
        cost.observe_load("L3", 1 << 40, 1.0)  # measured fast: the next request fetches everything
    pre.start("next", list(range(1000, 1000 + 4 * (CHUNK_PAGES + 40))))
    pre.poll()
    assert metrics.prefetch["pages_requested"] == CHUNK_PAGES + CHUNK_PAGES + 40


def test_no_periodic_exploration_while_a_probe_is_in_flight():
    m = CostModel(16, 2 << 20, explore_every=2)
    m.calibrate_prefill(10_000, 0.1)
    for _ in range(MIN_STORE_SAMPLES):
        m.observe_load("L3", 1 << 20, 1.0)  # a slow store: skipped
    assert [m.l3_plan(probing=True) for _ in range(4)] == ["skip"] * 4
    assert [m.l3_plan() for _ in range(2)] == ["skip", "explore"]


def test_both_at_once_splits_where_recompute_meets_fetch():
    m = CostModel(16, 1 << 20, explore_every=0)  # 16 tokens and 1 MiB per page
    m.fix(16 / 1e-3, {"L3": (1 << 20) / 2e-3, "L2": 1e12})  # a page computes in 1 ms, fetches in 2 ms
    head = m.both_head(40)
    assert head == 27  # 27 ms of compute beside 13 pages x 2 ms of fetch
    assert max(1e-3 * head, 2e-3 * (40 - head)) < 1e-3 * 40 * (1 - BOTH_MARGIN)  # clearly faster than recomputing
    m.fix(16 / 1e-3, {"L3": (1 << 20) / 3e-3, "L2": 1e12})  # fetching 3 ms a page: 30 against 40, too close
    assert m.both_head(40) == 0


def test_both_at_once_only_where_it_pays():
    m = CostModel(16, 1 << 20, explore_every=0)
    m.fix(16 / 1e-3, {"L3": (1 << 20) / 1e-1, "L2": 1e12})  # fetching is 100x slower: recompute it all
    assert m.both_head(40) == 0
    m.fix(16 / 1e-1, {"L3": (1 << 20) / 1e-3, "L2": 1e12})  # computing is 100x slower: fetch it all
    assert m.both_head(40) == 0
    m.fix(16 / 1e-3, {"L3": (1 << 20) / 1e-3, "L2": 1e12})
    assert m.both_head(1) == 0 and m.both_head(2) == 1
    assert CostModel(16, 1 << 20, policy="always-load").both_head(40) == 0
    assert CostModel(16, 1 << 20).both_head(40) == 0  # the store is not measured yet


def test_fetches_queued_on_the_store_delay_a_new_one():
    """A page computes in 1 ms and fetches in 0.5 ms: a whole fetch of 40 pages pays alone (20 ms against
    40), but not behind 60 queued pages (50 ms); a split then has to beat the queue too."""
    m = CostModel(16, 1 << 20, explore_every=0)
    m.fix(16 / 1e-3, {"L3": (1 << 20) / 5e-4, "L2": 1e12})
    assert m.fetch_pages(40, 1) == 40 and m.fetch_pages(40, 1, queued_pages=10) == 40
    assert m.fetch_pages(40, 1, queued_pages=60) == 0
    m.fix(16 / 1e-3, {"L3": (1 << 20) / 2e-3, "L2": 1e12})  # fetching 2 ms a page: split 27 / 13 alone
    assert m.both_head(40) == 27
    head = m.both_head(40, queued_pages=2)  # 2 x 2 ms ahead of its tail: recompute more of it
    assert head == 28 and max(1e-3 * head, 2e-3 * (2 + 40 - head)) < 1e-3 * 40 * (1 - BOTH_MARGIN)
    assert m.both_head(40, queued_pages=100) == 0  # the queue alone outlasts recomputing everything


def test_a_split_pays_for_the_second_pass_behind_other_prefill_work():
    """The tail rejoins in a later step, which computes the other requests' waiting prefill too: alone the
    split of 40 pages pays (27 ms against 40), behind 2 pages' worth of others' tokens it still does (29),
    behind 16 pages' worth it does not. The request's own tokens are not counted against it."""
    m = CostModel(16, 1 << 20, explore_every=0, max_step_tokens=8192)
    m.fix(16 / 1e-3, {"L3": (1 << 20) / 2e-3, "L2": 1e12})  # a page computes in 1 ms, fetches in 2 ms
    m.observe_backlog(40 * 16)  # only this request's own prompt waits
    assert m.both_head(40, own_tokens=40 * 16) == 27
    m.observe_backlog(42 * 16)
    assert m.both_head(40, own_tokens=40 * 16) == 27
    m.observe_backlog(56 * 16)
    assert m.both_head(40, own_tokens=40 * 16) == 0


def test_a_queued_request_waits_the_whole_steps_ahead_of_it_but_one():
    m = CostModel(16, 1 << 20, explore_every=0, max_step_tokens=1000)
    m.fix(1000.0, {"L3": (1 << 20) / 1e-2, "L2": 1e12})  # a step of 1,000 tokens takes 1 s
    assert m.queue_wait(999) == 0.0  # the rest of one step runs beside it
    assert m.queue_wait(1999) == 0.0  # its step is scheduled while the full one ahead of it runs
    assert m.queue_wait(2000) == pytest.approx(1.0) and m.queue_wait(3500) == pytest.approx(2.0)
    assert CostModel(16, 1 << 20, max_step_tokens=0).queue_wait(10) == pytest.approx(10 / 1e3)  # the prior


def test_pages_fetched_while_a_request_waits_are_free_however_slow_the_store():
    """A page fetches in 10 ms and computes in 1: no fetch or split pays, but a request that waits 0.5 s for
    its turn can take 50 pages meanwhile, fewer behind fetches already queued, none from an unmeasured store."""
    m = CostModel(16, 1 << 20, explore_every=0)
    m.fix(16 / 1e-3, {"L3": (1 << 20) / 1e-2, "L2": 1e12})
    assert m.fetch_pages(40, 1) == 0 and m.both_head(40) == 0 and m.l3_plan() == "skip"
    assert m.hidden_pages(0.5) == 50 and m.hidden_pages(0.5, queued_pages=20) == 30
    assert m.hidden_pages(0.5, queued_pages=80) == 0 and m.hidden_pages(0.0) == 0
    assert CostModel(16, 1 << 20).hidden_pages(0.5) == 0
    assert CostModel(16, 1 << 20, policy="always-load").hidden_pages(0.5) == 0
