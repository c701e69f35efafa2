"""MLA extend kernel vs a float64 torch reference: compiled on a GPU, else under Triton's interpreter (fp32) in
a child process."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from tests.kernels.interp import assert_case_ok, run_interpreted  # noqa: E402
from tests.kernels.mla_extend_cases import MLA_EXTEND_CASES, run  # noqa: E402


@pytest.fixture(scope="module")
def interpreted() -> dict[str, str]:
    return run_interpreted("tests.kernels.mla_extend_cases", list(MLA_EXTEND_CASES))


@pytest.mark.parametrize("name", list(MLA_EXTEND_CASES))
def test_mla_extend_case(name: str, request: pytest.FixtureRequest) -> None:
    assert_case_ok(name, request, lambda: run([name], "cuda", [torch.bfloat16, torch.float16, torch.float32]))
