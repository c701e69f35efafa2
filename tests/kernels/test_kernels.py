"""Triton kernels vs a float64 torch reference: compiled on a GPU, else under Triton's interpreter (fp32)."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from tests.kernels.cases import CASES, FP8_CASES, run  # noqa: E402
from tests.kernels.interp import assert_all_ok, assert_case_ok, run_interpreted  # noqa: E402

GPU_DTYPES = [torch.bfloat16, torch.float16, torch.float32]


@pytest.fixture(scope="module")
def interpreted() -> dict[str, str]:
    return run_interpreted("tests.kernels.cases", list(CASES))


@pytest.mark.parametrize("name", list(CASES))
def test_kernel_case(name: str, request: pytest.FixtureRequest) -> None:
    assert_case_ok(name, request, lambda: run([name], "cuda", GPU_DTYPES))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp8 rounding is checked on the device only")
@pytest.mark.parametrize("name", list(FP8_CASES))
def test_fp8_kv_case(name: str) -> None:
    results = run([name], "cuda", [torch.bfloat16, torch.float16])
    assert_all_ok(results)
