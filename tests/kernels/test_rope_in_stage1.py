"""Decode attention with the q/k norm and rotary applied as it loads q and the new k, against the standalone
pass then the plain kernel: compiled on a GPU, else under Triton's interpreter (fp32) in a child process."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from tests.kernels.interp import assert_case_ok, run_interpreted  # noqa: E402
from tests.kernels.rope_cases import ROPE_CASES, run  # noqa: E402


@pytest.fixture(scope="module")
def interpreted() -> dict[str, str]:
    return run_interpreted("tests.kernels.rope_cases", list(ROPE_CASES))


@pytest.mark.parametrize("name", list(ROPE_CASES))
def test_rope_in_stage1_case(name: str, request: pytest.FixtureRequest) -> None:
    assert_case_ok(name, request, lambda: run([name], "cuda", [torch.bfloat16, torch.float16, torch.float32]))
