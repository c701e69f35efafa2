"""`WaitingQueue`: its running sum of `expected_prefill` stays the sum of what is in it, whatever the operations."""
from __future__ import annotations

import random

import pytest

from tierlm.engine.request import Req
from tierlm.engine.waiting import WaitingQueue
from tierlm.sampling_params import SamplingParams


def req(i: int, expected: int) -> Req:
    r = Req(f"r{i}", 4, [1, 2, 3, 4], SamplingParams(max_tokens=1), 1)
    r.expected_prefill = expected
    return r


def test_the_sum_follows_every_operation():
    rng = random.Random(0)
    q, model, n = WaitingQueue(), [], 0
    for _ in range(2000):
        op = rng.choice(["append", "appendleft", "remove", "del", "reorder"] if model else ["append"])
        if op in ("append", "appendleft"):
            r = req(n, rng.randint(0, 500))
            n += 1
            getattr(q, op)(r)
            model.append(r) if op == "append" else model.insert(0, r)
        elif op == "remove":
            r = rng.choice(model)
            q.remove(r)
            model.remove(r)
        elif op == "del":
            i = rng.randrange(len(model))
            del q[i]
            del model[i]
        else:
            rng.shuffle(model)
            q.reorder(model)
        assert list(q) == model and len(q) == len(model) and bool(q) == bool(model)
        assert q.expected_tokens == sum(r.expected_prefill for r in model)
    assert all(r in q for r in model) and q[0] is model[0]


def test_reorder_must_keep_the_requests():
    q = WaitingQueue([req(0, 3), req(1, 4)])
    assert q.expected_tokens == 7
    with pytest.raises(ValueError, match="1 requests for a queue of 2"):
        q.reorder([q[0]])
