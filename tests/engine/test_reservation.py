"""The KV a running request counts on beyond its pages (`engine/reservation.py`), against its definition: the
whole budget without `--reserve-new-tokens`, else the prompt plus that many new tokens, within the budget and
never below what the request holds, in whole pages, less the pages it holds."""
from __future__ import annotations

import random

import pytest

from tierlm.engine.request import Req
from tierlm.engine.reservation import reservation, reserved_pages, target_len
from tierlm.sampling_params import SamplingParams


def random_req(rng: random.Random) -> Req:
    prompt, max_new = rng.randint(1, 300), rng.randint(1, 500)
    req = Req("r", prompt, [1] * (prompt + rng.randint(0, max_new - 1)), SamplingParams(max_tokens=max_new), max_new)
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
    assert reserved_pages(reqs, page_size, reserve) == sum(expected)
    assert reserved_pages([], page_size, reserve) == 0
