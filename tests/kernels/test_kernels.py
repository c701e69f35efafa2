"""Triton kernels vs a float64 torch reference: compiled on a GPU, else under Triton's interpreter (fp32)."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from tests.kernels.cases import CASES, run  # noqa: E402
from tests.kernels.interp import assert_case_ok, run_interpreted  # noqa: E402

GPU_DTYPES = [torch.bfloat16, torch.float16, torch.float32]


@pytest.fixture(scope="module")
def interpreted() -> dict[str, str]:
    return run_interpreted("tests.kernels.cases", list(CASES))


@pytest.mark.parametrize("name", list(CASES))
def test_kernel_case(name: str, request: pytest.FixtureRequest) -> None:
    assert_case_ok(name, request, lambda: run([name], "cuda", GPU_DTYPES))
