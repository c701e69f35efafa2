"""TritonBackend equals TorchNativeBackend (prefill with prefixes, decode, CUDA-graph-style decode buffers),
and the offline engine's greedy tokens are the same with either backend.

On a GPU the cases run compiled in bf16/fp16/fp32; without one, in fp32 under Triton's interpreter in a
child process (so this process never imports Triton in interpreter mode).
"""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from tests.kernels.backend_cases import BACKEND_CASES, FP8_BACKEND_CASES, run  # noqa: E402
from tests.kernels.interp import assert_all_ok, assert_case_ok, run_interpreted  # noqa: E402


@pytest.fixture(scope="module")
def interpreted() -> dict[str, str]:
    return run_interpreted("tests.kernels.backend_cases", list(BACKEND_CASES))


@pytest.mark.parametrize("name", list(BACKEND_CASES))
def test_triton_backend_matches_torch(name: str, request: pytest.FixtureRequest) -> None:
    # greedy engine parity only in fp32: low-precision ties may legitimately flip
    dtypes = [torch.float32] if name.startswith("engine") else [torch.bfloat16, torch.float16, torch.float32]
    assert_case_ok(name, request, lambda: run([name], "cuda", dtypes))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp8 rounding is checked on the device only")
@pytest.mark.parametrize("name", list(FP8_BACKEND_CASES))
def test_triton_backend_matches_torch_fp8_kv(name: str) -> None:
    dtypes = [torch.float32] if "engine" in name else [torch.bfloat16, torch.float16]
    results = run([name], "cuda", dtypes)
    assert_all_ok(results)
