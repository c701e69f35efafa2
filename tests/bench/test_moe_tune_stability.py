"""`benchmarks/moe_tune_stability.py`: its arguments (the timings need a GPU)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import moe_tune_stability as stability  # noqa: E402


@pytest.mark.parametrize("bad", [["--shape", "64,2048,1408"], ["--shape", "a,b,c,d"], ["--shape", "64,0,8,2"],
                                 ["--rounds", "1"], ["--tokens", "1,x"], ["--tokens", "0"]])
def test_bad_arguments_are_usage_errors(bad, capsys):
    with pytest.raises(SystemExit) as err:
        stability.main(bad)
    assert err.value.code == 2 and bad[0] in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
def test_without_a_gpu_it_says_so():
    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        stability.main([])
