"""The decode graph runner's ladder: every size captured with each launch the backend has at it; a step pads to the
next size captured with the launch the backend picks for it, or takes the usual one where none holds it."""
from __future__ import annotations

import torch

from tierlm.engine.cuda_graph import DecodeGraphRunner, batch_size_ladder


class _TwoLaunches:
    """A backend with a second decode launch for 16 requests and more, which it asks for whenever a request is longer
    than 100 (at any size: the runner must not take a launch no size holds)."""

    def init_graph_buffers(self, max_bs: int, max_len: int) -> None:
        pass

    def decode_variants(self, batch_size: int) -> tuple[int, ...]:
        return (0, 1) if batch_size >= 16 else (0,)

    def decode_variant(self, seq_lens: list[int]) -> int:
        return int(max(seq_lens) > 100)


def _runner(max_bs: int) -> DecodeGraphRunner:
    table = torch.zeros(5, 8, dtype=torch.int32)
    return DecodeGraphRunner(None, _TwoLaunches(), table, torch.zeros(5, 8, dtype=torch.int64), max_bs, capture=False)


def test_other_launches_are_captured_at_every_size_that_has_them():
    runner = _runner(100)
    assert batch_size_ladder(100)[-3:] == [88, 96, 100]
    assert [s for s, v in runner.captures if v == 0] == batch_size_ladder(100)
    assert [s for s, v in runner.captures if v == 1] == [s for s in batch_size_ladder(100) if s >= 16]
    assert runner.padded_size(17, 0) == runner.padded_size(17, 1) == 24
    assert runner.padded_size(97, 1) == 100 and runner.padded_size(16, 1) == 16 and runner.padded_size(3, 0) == 4


def test_a_step_takes_the_backends_launch_where_a_size_holds_it():
    runner = _runner(100)
    assert runner.variant_for([500] * 17) == 1
    assert runner.variant_for([50] * 17) == 0  # the backend's own choice
    assert runner.variant_for([500] * 15) == 1 and runner.padded_size(15, 1) == 16
    small = _runner(8)  # no size has the second launch: every step takes the usual one
    assert [v for _, v in small.captures] == [0, 0, 0, 0] and small.variant_for([500] * 8) == 0
