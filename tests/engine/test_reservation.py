"""The KV a running request counts on beyond its pages (`engine/reservation.py`), against its definition: the
whole budget without `--reserve-new-tokens`, else the prompt plus that many new tokens, within the budget and
never below what the request holds, in whole pages, less the pages it holds. The budgets' bound that spares
admission the sum: never below it, and a scheduler using it admits exactly as one that always sums."""
from __future__ import annotations

import math
import random

import pytest

from tests.engine.model_free import PAGE, drive, tight_scheduler
from tierlm.engine.request import Req
from tierlm.engine.reservation import BudgetPages, budget_pages, reservation, reserved_pages, target_len
import tierlm.engine.scheduler as scheduler_module
from tierlm.sampling_params import SamplingParams


def random_req(rng: random.Random) -> Req:
    prompt, max_new = rng.randint(1, 300), rng.randint(1, 500)
    tokens = [1] * (prompt + rng.randint(0, max_new - 1))
    req = Req(f"r{rng.random()}", prompt, tokens, SamplingParams(max_tokens=max_new), max_new)
    req.num_pending = rng.randint(0, 2)
    req.pages = list(range(rng.randint(0, 60)))
    return req


@pytest.mark.parametrize("reserve", [0, 1, 16, 128, 4096])
@pytest.mark.parametrize("page_size", [1, 4, 16])
def test_reservation_is_the_target_in_whole_pages_less_the_pages_held(reserve, page_size):
    rng = random.Random(reserve * 31 + page_size)
    reqs = [random_req(rng) for _ in range(400)]
    expected = []
    for r in reqs:
        held = len(r.token_ids) + r.num_pending
        target = r.max_seq_len if reserve == 0 else max(held, min(r.max_seq_len, r.prompt_len + reserve))
        assert target_len(r, reserve) == target
        pages = -(-target // page_size)
        expected.append(max(0, pages - len(r.pages)))
        assert reservation(r, page_size, reserve) == expected[-1]
        assert budget_pages(r, page_size) == math.ceil(r.max_seq_len / page_size) >= expected[-1]
    assert reserved_pages(reqs, page_size, reserve) == sum(expected)
    assert reserved_pages([], page_size, reserve) == 0


@pytest.mark.parametrize("reserve", [0, 16, 4096])
@pytest.mark.parametrize("page_size", [1, 16])
def test_budget_pages_bound_the_reservations_as_requests_join_and_leave(reserve, page_size):
    rng = random.Random(reserve + page_size)
    bound, running = BudgetPages(page_size), []
    for _ in range(600):
        if running and rng.random() < 0.4:
            bound.drop(running.pop(rng.randrange(len(running))))
        else:
            running.append(random_req(rng))
            bound.add(running[-1])
        assert bound.total == sum(budget_pages(r, page_size) for r in running)
        assert bound.total >= reserved_pages(running, page_size, reserve)
    bound.drop(random_req(rng))  # one it never held: nothing changes
    assert bound.total == sum(budget_pages(r, page_size) for r in running)


def _simulate(reserve: int, seed: int, summed_always: bool, monkeypatch,
              tiered: bool = False) -> tuple[list, int, int]:
    """A scheduler over a tight pool driven without a model (`tests/engine/model_free.py`; `tiered`: with a host
    tier whose backups and load-backs run each step): every batch and refusal in order, how often admission summed
    the reservations, and how many requests were retracted."""
    sched = tight_scheduler(reserve, tiered)
    if summed_always:  # the scheduler as it was before the bound: the sum whenever one may be admitted
        monkeypatch.setattr(sched._budgets, "admits", lambda *args: False)
    sums = []
    monkeypatch.setattr(scheduler_module, "reserved_pages", lambda *args: sums.append(1) or reserved_pages(*args))
    log = []

    def record(step, batch, refused, copies) -> None:
        assert sched._budgets.total == sum(budget_pages(r, PAGE) for r in sched.running)
        log.append(([r.request_id for r in refused], None if batch is None else
                    (batch.mode, [r.request_id for r in batch.reqs], list(batch.extend_lens))))
        if copies is not None:
            log.append((len(copies.backups), list(copies.load_host)))

    drive(sched, seed, record, tiered)
    return log, len(sums), sched.num_retracted


@pytest.mark.parametrize("tiered", [False, True])
@pytest.mark.parametrize("reserve", [0, 8])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_admission_with_the_bound_matches_summing_every_time(reserve, seed, tiered, monkeypatch):
    bounded, bounded_sums, retracted = _simulate(reserve, seed, False, monkeypatch, tiered)
    summed, summed_sums, _ = _simulate(reserve, seed, True, monkeypatch, tiered)
    assert bounded == summed
    assert 0 < bounded_sums < summed_sums  # the pool is tight at times, and roomy at others
    assert retracted > 0 or reserve == 0  # with a partial reservation the pool runs out and requests retract
