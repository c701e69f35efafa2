"""`benchmarks/linear_tune_stability.py`: both rules' picks from known round timings (the tunings themselves need
a GPU)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import linear_tune_stability as stability  # noqa: E402


def _round(a: float, b: float, unfused: float = 20.0) -> dict[str, float]:
    """One round's timings at 1 row: cuBLAS 10, launch `a` (listed first) and `b`; with the RMSNorm prologue the
    unfused norm + plain launch takes `unfused`."""
    return {"plain/1/torch": 10.0, "plain/1/a": a, "plain/1/b": b,
            "rmsnorm/1/torch": 10.0, "rmsnorm/1/unfused+a": unfused, "rmsnorm/1/a": a, "rmsnorm/1/b": b}


def test_picks_of_both_rules_from_one_round():
    assert stability.picks(_round(6.0, 5.97), "plain", 1, 0.97) == ("b", "a"), "a near-tie: the rules differ"
    assert stability.picks(_round(6.0, 5.0), "plain", 1, 0.97) == ("b", "b")
    assert stability.picks(_round(9.8, 9.9), "plain", 1, 0.97) == ("torch", "torch"), "not under 9.7"
    assert stability.picks(_round(6.0, 5.0, unfused=5.1), "rmsnorm", 1, 0.97) == ("torch", "torch"), \
        "the unfused path (5.1) bounds the fused launches at 4.95"


def test_tally_counts_a_near_tie_that_swaps_between_rounds_only_under_the_old_rule():
    rounds = [_round(6.0, 5.97), _round(5.98, 6.0), _round(6.01, 5.99)]
    (_, _, old, new), = stability.tally(rounds, ("plain",), (1,), 0.97)
    assert old == {"b": 2, "a": 1} and new == {"a": 3}
    assert stability.fmt(old) == "b x2, a x1"


def test_shapes_and_arguments():
    assert stability.parse_shape("4096x1024:plain+rmsnorm") == (4096, 1024, ("plain", "rmsnorm"))
    assert stability.parse_shape("8x16") == (8, 16, ("plain",))
    for bad in (["--rounds", "1"], ["--shapes", "4096by1024"]):
        with pytest.raises(SystemExit) as err:
            stability.main(bad)
        assert err.value.code == 2, "a bad argument is a usage error naming the flag"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
def test_without_a_gpu_it_says_so(capsys):
    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        stability.main(["--rounds", "2"])
