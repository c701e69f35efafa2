"""Triton kernels vs a float64 torch reference: compiled on a GPU, else under Triton's interpreter (fp32)."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from tests.kernels.cases import CASES, run  # noqa: E402
from tests.kernels.interp import gpu_available, run_interpreted  # noqa: E402

GPU_DTYPES = [torch.bfloat16, torch.float16, torch.float32]


@pytest.fixture(scope="module")
def interpreted() -> dict[str, str]:
    return run_interpreted("tests.kernels.cases", list(CASES))


@pytest.mark.parametrize("name", list(CASES))
def test_kernel_case(name: str, request: pytest.FixtureRequest) -> None:
    if gpu_available():
        results = run([name], "cuda", GPU_DTYPES)
    else:
        all_results = request.getfixturevalue("interpreted")
        results = {k: v for k, v in all_results.items() if k.startswith(name + "[")}
    assert results, f"case {name} did not run"
    failed = {k: v for k, v in results.items() if v != "ok"}
    assert not failed, "\n".join(f"{k}:\n{v}" for k, v in failed.items())
