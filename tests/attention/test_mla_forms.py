"""Both MLA backends with the model's up-projections: every request in the form `LatentForms` picks (absorbed or
decompressed), against float64 attention over the up-projected latents (`tests.kernels.mla_forms_cases`).

The torch backend's cases run in this process (on a GPU in bf16/fp16/fp32 too, where SDPA takes its fused
kernels); the Triton backend's compiled on a GPU (bf16/fp16/fp32), else in fp32 under Triton's interpreter in a
child process.
"""
from __future__ import annotations

import pytest
import torch

from tests.kernels.mla_forms_cases import FORMS_CASES, run

TORCH_CASES = [name for name in FORMS_CASES if name.startswith("forms_torch")]
TRITON_CASES = [name for name in FORMS_CASES if name.startswith("forms_triton")]


@pytest.mark.parametrize("name", TORCH_CASES)
def test_torch_backend_forms(name: str) -> None:
    from tests.kernels.interp import assert_all_ok

    assert_all_ok(run([name], "cpu", [torch.float32]))
    if torch.cuda.is_available():
        assert_all_ok(run([name], "cuda", [torch.bfloat16, torch.float16, torch.float32]))


@pytest.fixture(scope="module")
def interpreted() -> dict[str, str]:
    from tests.kernels.interp import run_interpreted

    return run_interpreted("tests.kernels.mla_forms_cases", TRITON_CASES)


@pytest.mark.parametrize("name", TRITON_CASES)
def test_triton_backend_forms(name: str, request: pytest.FixtureRequest) -> None:
    pytest.importorskip("triton")
    from tests.kernels.interp import assert_case_ok

    assert_case_ok(name, request, lambda: run([name], "cuda", [torch.bfloat16, torch.float16, torch.float32]))
