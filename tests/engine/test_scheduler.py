"""The scheduler alone (a real KV manager, no model): the order each schedule policy admits, and how
mixed steps split their token budget between decodes and a prefill chunk."""
from __future__ import annotations

import pytest

from tierlm.engine.policy import LPM_MAX_WAITING, admission_order
from tierlm.engine.request import Req
from tierlm.engine.batch import ScheduledBatch
from tierlm.engine.mixed_budget import MixedBudget
from tierlm.engine.scheduler import Scheduler
from tierlm.kvcache.manager import KVCacheManager
from tierlm.sampling_params import SamplingParams

PAGE = 4


def make_scheduler(policy: str = "fcfs", max_prefill: int = 1000, max_mixed: int = 0, max_running: int = 16,
                   prefix_cache: bool = True) -> Scheduler:
    kv = KVCacheManager(256, PAGE, max_reqs=max_running, enable_prefix_cache=prefix_cache)
    return Scheduler(kv, max_running, max_prefill, reserve_new_tokens=0, mixed=MixedBudget(max_mixed),
                     policy=policy)


def req(rid: str, tokens: list[int], priority: int = 0, max_new: int = 4) -> Req:
    return Req(rid, len(tokens), list(tokens), SamplingParams(max_tokens=max_new, priority=priority), max_new)


def run(batch: ScheduledBatch) -> None:
    """What the engine does with a batch, without a model: KV for its tokens, a token for each sampling site."""
    for r, n in zip(batch.reqs, batch.extend_lens):
        r.kv_len += n
        if r.kv_len == r.seq_len:
            r.token_ids.append(1)
            r.decodable = True


def admitted(sched: Scheduler) -> list[str]:
    """The requests of the next batch, in batch (= admission) order; the batch is then run."""
    batch, refused = sched.schedule()
    assert batch is not None and not refused
    run(batch)
    return [r.request_id for r in batch.reqs]


def test_fcfs_admits_in_arrival_order():
    sched = make_scheduler("fcfs")
    for rid, prio in (("a", 5), ("b", -1), ("c", 0)):
        sched.add(req(rid, list(range(10, 16)), prio))
    assert admitted(sched) == ["a", "b", "c"]


def test_priority_admits_lower_first_and_ties_in_arrival_order():
    sched = make_scheduler("priority")
    for rid, prio in (("a", 5), ("b", -1), ("c", 0), ("d", -1), ("e", 0)):
        sched.add(req(rid, list(range(10, 16)), prio))
    assert admitted(sched) == ["b", "d", "c", "e", "a"]


def test_priority_head_that_does_not_fit_holds_the_others_back():
    """The most urgent request waits for room; lower priorities do not overtake it."""
    sched = make_scheduler("priority", max_running=4)
    sched.add(req("run", list(range(10, 16))))
    assert admitted(sched) == ["run"]
    sched.add(req("later", list(range(20, 26)), priority=1))
    sched.add(req("first", list(range(30, 36)), priority=0))
    sched.max_running = 1  # no room for a second request now
    batch, _ = sched.schedule()
    assert batch.mode == "decode" and [r.request_id for r in sched.waiting] == ["first", "later"]
    sched.max_running = 4
    assert admitted(sched) == ["first", "later"]


def _cache_prefix(sched: Scheduler, tokens: list[int]) -> None:
    """Run a request over `tokens` and finish it: its full pages stay in the prefix cache."""
    r = req("warm", tokens)
    sched.add(r)
    batch, _ = sched.schedule()
    run(batch)
    sched.remove(r, cache=True)


def test_lpm_admits_the_longest_cached_prefix_first():
    sched = make_scheduler("lpm")
    shared = list(range(100, 112))  # three pages
    _cache_prefix(sched, shared + [7, 7, 7])
    sched.add(req("none", list(range(200, 214))))
    sched.add(req("one_page", shared[:4] + list(range(300, 310))))
    sched.add(req("three_pages", shared + [400, 401]))
    sched.add(req("also_none", list(range(500, 514))))
    assert admitted(sched) == ["three_pages", "one_page", "none", "also_none"]
    assert [r.num_cached_tokens for r in sched.running[:2]] == [12, 4]


def test_lpm_keeps_arrival_order_without_a_prefix_cache_or_beyond_its_queue_limit():
    sched = make_scheduler("lpm", prefix_cache=False)
    sched.add(req("x", [1, 2, 3, 4, 5]))
    sched.add(req("y", [1, 2, 3, 4, 5, 6]))
    assert admitted(sched) == ["x", "y"]
    queue = [req(str(i), [i] * 5) for i in range(LPM_MAX_WAITING + 1)]
    assert admission_order("lpm", queue, lambda r: int(r.request_id)) == queue
    assert admission_order("lpm", queue[:3], lambda r: int(r.request_id)) == queue[:3][::-1]


def test_unknown_policy_names_the_flag():
    with pytest.raises(ValueError, match="--schedule-policy"):
        make_scheduler("sjf")


def _two_decoding(sched: Scheduler) -> list[Req]:
    decoding = [req("d0", list(range(10, 15)), max_new=50), req("d1", list(range(20, 23)), max_new=50)]
    for r in decoding:
        sched.add(r)
    while not all(r.decodable for r in decoding):
        run(sched.schedule()[0])
    return decoding


def test_mixed_step_joins_decodes_and_a_prefill_chunk_within_the_budget():
    sched = make_scheduler(max_prefill=100, max_mixed=8)
    decoding = _two_decoding(sched)
    long = req("p", list(range(50, 70)))  # 20 tokens: chunks of 8 - 2 decode tokens
    sched.add(long)
    chunks = []
    while not long.decodable:
        batch, _ = sched.schedule()
        assert batch.mode == "mixed" and batch.num_tokens <= 8
        lens = dict(zip([r.request_id for r in batch.reqs], batch.extend_lens))
        assert lens["d0"] == lens["d1"] == 1
        # the decodes end the pass (the attention backends send that trailing run through decode kernels)
        assert [r.request_id for r in batch.reqs] == ["p", "d0", "d1"]
        chunks.append(lens["p"])
        run(batch)
    assert chunks == [6, 6, 6, 2]
    batch, _ = sched.schedule()
    assert batch.mode == "decode" and set(batch.reqs) == {*decoding, long}


def test_mixed_chunks_stay_within_max_prefill_tokens():
    sched = make_scheduler(max_prefill=3, max_mixed=8)
    _two_decoding(sched)
    sched.add(req("p", list(range(50, 70))))
    batch, _ = sched.schedule()
    assert batch.mode == "mixed" and dict(zip([r.request_id for r in batch.reqs], batch.extend_lens))["p"] == 3


def _mixed_prefill(sched: Scheduler) -> int:
    batch, _ = sched.schedule()
    assert batch.mode == "mixed"
    run(batch)
    return sum(n for r, n in zip(batch.reqs, batch.extend_lens) if n > 1 or r.request_id.startswith("p"))


@pytest.mark.parametrize("steps,burst_tokens,lone,burst", [(4, 0, [6, 6, 6, 2], 22), (2, 0, [14, 6], 30),
                                                          (0, 0, [20], 30), (4, 60, [6, 6, 6, 2], 30)])
def test_mixed_steps_take_a_share_of_the_backlog_sized_to_a_pass(steps, burst_tokens, lone, burst):
    """Passes of 8, 16, 24 or 32 rows; 2 decodes. A lone 20-token prompt with 4 steps: 2 + 20/4 rows -> passes of
    8 (6 prefill tokens each); a burst of 80 tokens: 2 + 20 -> 24 rows (22 tokens). 0 steps: always the budget;
    so is a backlog over the burst threshold."""
    def scheduler() -> Scheduler:
        kv = KVCacheManager(256, PAGE, max_reqs=16)
        sched = Scheduler(kv, 16, 100, mixed=MixedBudget(32, 1, (8, 16, 24, 32), steps, burst_tokens))
        _two_decoding(sched)
        return sched

    sched = scheduler()
    sched.add(req("p", list(range(50, 70))))
    assert [_mixed_prefill(sched) for _ in lone] == lone
    sched = scheduler()
    for i in range(4):
        sched.add(req(f"p{i}", list(range(100 + 20 * i, 120 + 20 * i))))
    assert _mixed_prefill(sched) == burst


def test_a_burst_can_get_a_prefill_step_of_its_own():
    """With `burst_prefill`, a backlog over the burst threshold runs as a prefill step (the decodes wait) of up to
    the prefill budget; once the backlog is under it, mixed steps resume."""
    kv = KVCacheManager(256, PAGE, max_reqs=16)
    sched = Scheduler(kv, 16, 100, mixed=MixedBudget(32, 1, (8, 16, 24, 32), 2, 30, burst_prefill=True))
    _two_decoding(sched)
    for i in range(4):
        sched.add(req(f"p{i}", list(range(100 + 20 * i, 120 + 20 * i))))
    batch, _ = sched.schedule()  # 80 tokens wait: all of them at once, alone
    assert batch.mode == "prefill" and batch.extend_lens == [20, 20, 20, 20]
    run(batch)
    sched.add(req("q", list(range(200, 220))))  # 20 tokens: under the threshold, a mixed step again
    batch, _ = sched.schedule()  # 6 decodes + 20 / 2 -> a pass of 16 rows
    assert batch.mode == "mixed" and batch.extend_lens == [10] + [1] * 6
    assert MixedBudget(32, 1, (), 0, 30, burst_prefill=True).prefill_room(2, 31) is None
    assert MixedBudget(32, 1, (), 0, 30, burst_prefill=True).prefill_room(2, 30) == 30


def test_without_mixing_prefill_runs_alone():
    sched = make_scheduler(max_prefill=100, max_mixed=0)
    decoding = _two_decoding(sched)
    sched.add(req("p", list(range(50, 70))))
    batch, _ = sched.schedule()
    assert batch.mode == "prefill" and [r.request_id for r in batch.reqs] == ["p"]
    run(batch)
    batch, _ = sched.schedule()
    assert batch.mode == "decode" and len(batch.reqs) == 3 and set(decoding) < set(batch.reqs)


@pytest.mark.parametrize("tiered", [True, False])
def test_each_schedule_tells_the_kv_manager_the_prefill_waiting(tiered):
    """The cost model prices a split L3 fetch by the prefill work its tail will rejoin behind; without lower
    tiers (no cost model) and without mixed steps the backlog is not counted (0)."""
    if tiered:
        from tests.kvcache.tiers import make_tiered

        kv = make_tiered(PAGE, 64, 32, max_reqs=16, threads=False)[0]
        assert kv.cost is not None
        sched = Scheduler(kv, 16, 8, reserve_new_tokens=0, mixed=MixedBudget(0))
    else:
        sched = make_scheduler(max_prefill=8)
    seen = []
    poll = sched.kv.poll
    sched.kv.poll = lambda backlog=0: (seen.append(backlog), poll(backlog))
    for i in range(3):
        sched.add(req(f"r{i}", list(range(10 * i, 10 * i + 6))))
    run(sched.schedule()[0])  # 18 tokens wait; the step runs r0's 6 and 2 of r1's
    run(sched.schedule()[0])  # 4 of r1 and 6 of r2 wait
    assert seen == ([18, 10] if tiered else [0, 0])


def test_find_knows_every_request_the_scheduler_holds_and_none_it_let_go():
    """`find` answers from an index kept through arrival, admission, retraction, removal and refusal."""
    sched = make_scheduler()
    a, b, big = req("a", list(range(10, 16))), req("b", list(range(20, 26))), req("big", list(range(2000)))
    for r in (a, b, big):
        sched.add(r)
    assert all(sched.find(r.request_id) is r for r in (a, b, big)) and sched.find("nope") is None
    batch, refused = sched.schedule()  # a and b admitted; big can never fit a pool of 256 pages of 4
    assert [r.request_id for r in refused] == ["big"] and sched.find("big") is None
    run(batch)
    sched._retract(b)  # back to the queue's head, still the scheduler's
    assert sched.find("b") is b and sched.waiting[0] is b
    sched.remove(a, cache=True)
    assert sched.find("a") is None and sched.find("b") is b
    sched.remove(b, cache=False)
    assert sched.find("b") is None and not sched.has_work()


@pytest.mark.parametrize("max_mixed", [0, 32])
def test_the_prefill_backlog_is_counted_only_where_it_is_used(monkeypatch, max_mixed):
    """It sizes mixed steps and feeds the tiers' cost model; with neither (mixed steps off, no lower tier) the
    scheduler does not walk its queues for it every step."""
    import tierlm.engine.scheduler as scheduler_module

    calls = []
    real = scheduler_module.prefill_backlog
    monkeypatch.setattr(scheduler_module, "prefill_backlog", lambda *a: calls.append(a) or real(*a))
    sched = make_scheduler(max_mixed=max_mixed)
    sched.add(req("a", [1, 2, 3, 4, 5]))
    run(sched.schedule()[0])
    sched.add(req("b", [6, 7, 8]))  # (an arrival asks for it only where an L3 prefetch would use it)
    for _ in range(3):
        run(sched.schedule()[0])
    assert (len(calls) > 0) == (max_mixed > 0), calls


def test_an_arrival_counts_the_prefill_ahead_of_it_only_for_an_l3_prefetch():
    """The prefetcher weighs a fetch against the prefill queued ahead; without one nothing is counted."""
    from types import SimpleNamespace

    sched = make_scheduler()
    calls = []
    sched._prefill_ahead = lambda: calls.append(1) or 7
    sched.add(req("a", [1, 2, 3, 4, 5]))
    assert calls == [] and sched.find("a").expected_prefill == 5  # no L3: all of its prompt
    sched.kv.prefetcher = SimpleNamespace(start=lambda rid, tokens, ahead: ahead + len(tokens))
    sched.add(req("b", [6, 7, 8]))
    assert calls == [1] and sched.find("b").expected_prefill == 7 + 2


@pytest.mark.parametrize("tiered", [False, True])
@pytest.mark.parametrize("reserve,seed", [(8, 4), (8, 5), (0, 6)])
def test_decode_steps_grow_as_the_general_path_does(tiered, reserve, seed, monkeypatch):
    """A decode step takes only the requests whose token starts a page through the allocation path
    (`_grow_decodes`); over a tight pool that retracts, it gives the batches, retractions and copies of the general
    path (`_grow_batch` of every decode)."""
    from tests.engine.model_free import drive, tight_scheduler

    def run(general: bool) -> tuple[list, int]:
        sched = tight_scheduler(reserve, tiered)
        if general:
            monkeypatch.setattr(sched, "_grow_decodes", lambda reqs: sched._grow_batch(reqs, [1] * len(reqs), False)[0])
        log: list = []
        drive(sched, seed, lambda step, batch, refused, copies: log.append(
            (None if batch is None else (batch.mode, [r.request_id for r in batch.reqs], list(batch.map_slots)),
             None if copies is None else (len(copies.backups), list(copies.load_host)))), tiered)
        return log, sched.num_retracted

    fast, general = run(False), run(True)
    assert fast == general
    assert fast[1] > 0 or reserve == 0


@pytest.mark.parametrize("tiered", [False, True])
@pytest.mark.parametrize("policy,seed", [("fcfs", 7), ("lpm", 8)])
def test_prefill_passes_grow_unsorted_as_the_sorted_path_does(tiered, policy, seed, monkeypatch):
    """A prefill pass's requests are in running order already (chunked prefills, then the admitted ones as they
    joined), so `_grow_batch` skips its sort there: over a tight pool that retracts, the batches, retractions and
    copies equal those of the sorting path."""
    from tests.engine.model_free import drive, tight_scheduler

    def run(sort: bool) -> tuple[list, int, int]:
        sched = tight_scheduler(8, tiered)
        sched.policy = policy
        grow, unsorted = sched._grow_batch, []

        def growing(reqs, lens, ordered):
            if ordered:
                rank = [sched.running.index(r) for r in reqs]
                assert rank == sorted(rank), "a prefill pass out of running order"
                unsorted.append(1)
            return grow(reqs, lens, ordered and not sort)
        monkeypatch.setattr(sched, "_grow_batch", growing)
        log: list = []
        drive(sched, seed, lambda step, batch, refused, copies: log.append(
            (None if batch is None else (batch.mode, [r.request_id for r in batch.reqs], list(batch.map_slots)),
             None if copies is None else (len(copies.backups), list(copies.load_host)))), tiered)
        return log, sched.num_retracted, len(unsorted)

    fast, general = run(False), run(True)
    assert fast == general
    assert fast[1] > 0 and fast[2] > 0
