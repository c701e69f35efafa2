"""How the start-up tuners pick among timed launches (the timing itself replays a CUDA graph: GPU only)."""
from __future__ import annotations

import pytest
import torch

from tierlm.kernels import tune_timing


def test_choose_takes_the_first_listed_of_a_near_tie_and_nothing_over_the_bound():
    a, b, c = "a", "b", "c"  # in the candidates' order
    assert tune_timing.choose([], 10.0) is None
    assert tune_timing.choose([(a, 10.0), (b, 12.0)], 10.0) is None, "not under the bound: the unfused path"
    assert tune_timing.choose([(a, 8.0), (b, 6.0), (c, 7.0)], 10.0) == b
    assert tune_timing.choose([(a, 6.05), (b, 6.0)], 10.0) == a, "within 1% of the fastest: the first listed"
    assert tune_timing.choose([(a, 6.0), (b, 5.95)], 10.0) == a, "either order of a near-tie gives one launch"
    assert tune_timing.choose([(a, 6.1), (b, 6.0)], 10.0) == b, "over 1% slower is no tie"
    assert tune_timing.choose([(a, 6.05), (b, 6.0)], 6.04) == b, "a tied launch over the bound is not taken"
    assert tune_timing.choose([(a, 6.5), (b, 6.0)], 10.0, tie=0.1) == a
    assert tune_timing.choose([(a, 1e9), (b, 2e9)]) == a, "no bound by default: the fastest or its tie"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="replays a CUDA graph")
def test_graph_time_us_times_the_device_work_of_each_input():
    xs = [torch.randn(2048, 2048, device="cuda") for _ in range(2)]
    small = tune_timing.graph_time_us(lambda i: xs[i][:64, :64] @ xs[i][:64, :64], 2)
    large = tune_timing.graph_time_us(lambda i: xs[i] @ xs[i], 2)
    assert 0 < small < large
