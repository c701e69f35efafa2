"""`mixed_budget`: the prefill share of a mixed pass, from the decodes beside it and the prefill waiting."""
from __future__ import annotations

import itertools

from tierlm.engine.mixed_budget import DRAIN_PASSES, mixed_budget


def budget(decodes: int, backlog: list[int], max_tokens: int = 2048, min_tokens: int | None = 256,
           max_prefill: int = 8192) -> int:
    return mixed_budget(decodes, iter(backlog), max_tokens, min_tokens, max_prefill)


def test_little_waiting_fills_the_pass_to_the_floor_only():
    assert budget(40, [800]) == 256 - 40  # a quarter of it (200) is less than the floor
    assert budget(40, [100]) == 216  # the floor, even when less waits (the chunk takes what there is)
    assert budget(0, []) == 256


def test_a_backlog_takes_a_share_of_itself_per_pass():
    assert budget(40, [1024, 1024, 1024]) == 3072 // DRAIN_PASSES
    assert budget(40, [1000, 1]) == -(-1001 // DRAIN_PASSES)


def test_the_budget_never_passes_its_top():
    assert budget(40, [8192] * 3) == 2048 - 40
    assert budget(40, [8192], max_prefill=512) == 512
    assert budget(40, [8192] * 3, max_tokens=2048, min_tokens=4096) == 2048 - 40


def test_decodes_beyond_the_floor_leave_at_least_one_token():
    assert budget(300, []) == 1
    assert budget(300, [40]) == 10
    assert budget(2047, [8192]) == 1


def test_fixed_budget_when_the_floor_is_the_top_or_unset():
    assert budget(40, [10], min_tokens=2048) == 2048 - 40
    assert budget(40, [10], min_tokens=None) == 2048 - 40


def test_a_long_queue_is_not_read_past_what_sets_the_top():
    assert budget(40, itertools.repeat(4096)) == 2048 - 40  # an endless backlog: stops at the top
