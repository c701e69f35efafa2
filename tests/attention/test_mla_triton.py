"""MLATritonBackend equals MLATorchBackend (prefill with prefixes, decode, CUDA-graph-style decode buffers),
and a tiny DeepSeek-V2's greedy tokens are the same with either backend.

On a GPU the cases run compiled (bf16/fp16/fp32; engine parity in fp32 only); without one, in fp32 under
Triton's interpreter in a child process.
"""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from tests.kernels.interp import assert_case_ok, run_interpreted  # noqa: E402
from tests.kernels.mla_cases import MLA_CASES, run  # noqa: E402

BACKEND_CASES = [name for name in MLA_CASES if not name.startswith("mla_decode")]


@pytest.fixture(scope="module")
def interpreted() -> dict[str, str]:
    return run_interpreted("tests.kernels.mla_cases", BACKEND_CASES)


@pytest.mark.parametrize("name", BACKEND_CASES)
def test_mla_triton_matches_torch(name: str, request: pytest.FixtureRequest) -> None:
    # greedy engine parity only in fp32: low-precision ties may legitimately flip
    dtypes = [torch.float32] if name.startswith("engine") else [torch.bfloat16, torch.float16, torch.float32]
    assert_case_ok(name, request, lambda: run([name], "cuda", dtypes))
