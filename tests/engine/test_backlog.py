"""`prefill_backlog`, the scheduler's decoding set and an arrival's backlog: the spelled-out conditions and the
kept sum agree with a walk through `Req`'s properties."""
from __future__ import annotations

import random

from tierlm.engine.backlog import prefill_backlog
from tierlm.engine.request import Req
from tierlm.engine.waiting import WaitingQueue
from tierlm.sampling_params import SamplingParams

from tests.engine.test_scheduler import make_scheduler


def random_req(rng: random.Random, i: int) -> Req:
    prompt = rng.randint(1, 40)
    max_new = rng.randint(1, 20)
    r = Req(f"r{i}", prompt, list(range(prompt + rng.randint(0, max_new))), SamplingParams(max_tokens=max_new), max_new)
    r.num_pending = rng.randint(0, 2)
    r.kv_len = rng.randint(0, len(r.token_ids))
    r.decodable = rng.random() < 0.5
    r.expected_prefill = rng.randint(0, 50)
    if rng.random() < 0.1:
        r.finish_reason = "stop"
    return r


def reference(running, waiting, cap, expected=False):
    """The backlog walked through `Req`'s properties (`expected`: the waiting ones' `expected_prefill`)."""
    total = 0
    for queue, tokens in ((running, lambda r: r.extend_len),
                          (waiting, (lambda r: r.expected_prefill) if expected else (lambda r: r.extend_len))):
        for r in queue:
            if r.prefilling:
                total += tokens(r)
                if total >= cap:
                    return total
    return total


def test_backlog_and_decoding_agree_with_the_properties():
    rng = random.Random(0)
    for trial in range(300):
        running = [random_req(rng, i) for i in range(rng.randint(0, 12))]
        waiting = [random_req(rng, 100 + i) for i in range(rng.randint(0, 12))]
        cap = rng.choice([1, 10, 50, 10_000])
        assert prefill_backlog(running, waiting, cap) == reference(running, waiting, cap)
        sched = make_scheduler()
        sched.running = running
        queued = [r for r in waiting if not r.decodable]  # a waiting request is never decodable
        sched.waiting = WaitingQueue(queued)
        for steps in (1, 16):
            want = min(steps * sched.max_prefill_tokens, reference(running, queued, 10**9, expected=True))
            assert sched._prefill_ahead(steps) == want
        assert sched._decoding() == [r for r in running if not r.prefilling and not r.fully_scheduled
                                     and not r.finished]


def test_backlog_stops_at_the_cap():
    reqs = [Req(f"w{i}", 10, list(range(10)), SamplingParams(max_tokens=1), 1) for i in range(5)]
    assert prefill_backlog([], reqs, 25) == 30  # the third request passes the cap: counted, then stop
    assert prefill_backlog([], reqs, 1000) == 50
