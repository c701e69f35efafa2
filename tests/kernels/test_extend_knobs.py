"""Extend attention kernel under each tuning knob vs a float64 torch reference: compiled on a GPU, else under
Triton's interpreter (fp32 and fp16) in a child process."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from tests.kernels.extend_cases import EXTEND_CASES, run  # noqa: E402
from tests.kernels.interp import assert_case_ok, run_interpreted  # noqa: E402


@pytest.fixture(scope="module")
def interpreted() -> dict[str, str]:
    return run_interpreted("tests.kernels.extend_cases", list(EXTEND_CASES))


@pytest.mark.parametrize("name", list(EXTEND_CASES))
def test_extend_knob_case(name: str, request: pytest.FixtureRequest) -> None:
    assert_case_ok(name, request, lambda: run([name], "cuda", [torch.bfloat16, torch.float16, torch.float32]))


def test_knob_values_are_checked() -> None:
    from tierlm.kernels.extend_attention import extend_attention

    def call(head_dim: int = 32, **knobs) -> None:
        q, kv = torch.zeros(4, 4, head_dim), torch.zeros(4, 2, head_dim)
        extend_attention(q, kv, kv, q.clone(), kv, kv, torch.zeros(1, 8, dtype=torch.int32),
                         torch.zeros(1, dtype=torch.int32), torch.zeros(1, dtype=torch.int32),
                         torch.tensor([0, 4], dtype=torch.int32), 4, 1.0, **knobs)

    with pytest.raises(AssertionError, match="order must be one of"):
        call(order="sideways")
    with pytest.raises(AssertionError, match="pack_heads must divide"):
        call(pack_heads=3)
    with pytest.raises(AssertionError, match="tma needs"):
        call(head_dim=48, tma=True)  # no power-of-two head: no descriptor tile
