"""Decoupled rotary kernel: bit for bit the torch layer's arithmetic (compiled on a GPU, else interpreted)."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from tests.kernels.cases import run  # noqa: E402
from tests.kernels.interp import assert_case_ok, run_interpreted  # noqa: E402
from tests.kernels.sm90 import cuda_compiler_or_skip  # noqa: E402
from tests.kernels.decoupled_rope_cases import DECOUPLED_ROPE_CASES  # noqa: E402

GPU_DTYPES = [torch.bfloat16, torch.float16, torch.float32]


@pytest.fixture(scope="module")
def interpreted() -> dict[str, str]:
    return run_interpreted("tests.kernels.decoupled_rope_cases", list(DECOUPLED_ROPE_CASES))


@pytest.mark.parametrize("name", list(DECOUPLED_ROPE_CASES))
def test_decoupled_rope_case(name: str, request: pytest.FixtureRequest) -> None:
    assert_case_ok(name, request, lambda: run([name], "cuda", GPU_DTYPES, cases=DECOUPLED_ROPE_CASES))


def test_the_layer_takes_the_kernel_on_cuda_only(monkeypatch):
    """On a CPU tensor the layer computes in torch; a CUDA tensor goes to the kernel (faked here)."""
    from tierlm.kernels import decoupled_rope
    from tierlm.layers.decoupled_rotary import DecoupledRotary

    rope = DecoupledRotary(16, 32, 10000.0, None, "complex", 32)
    q, k, pos = torch.randn(2, 3, 16), torch.randn(2, 16), torch.tensor([1, 5])
    assert all(torch.equal(a, b) for a, b in zip(rope(pos, q, k), rope.rotate_torch(pos, q, k)))
    calls = []
    monkeypatch.setattr(decoupled_rope, "decoupled_rope", lambda *a: calls.append(a) or ("q", "k"))
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    assert rope(pos, q, k) == ("q", "k")
    assert calls and calls[0][5:] == ("complex", None) and calls[0][3] is rope.cos


def test_the_layer_writes_q_in_place_when_asked():
    """`q_out=` (the model passes q's own rope part, a strided view): the rotated q lands there."""
    from tierlm.layers.decoupled_rotary import DecoupledRotary

    rope = DecoupledRotary(8, 32, 10000.0, None, "half", 32)
    q, k, pos = torch.randn(3, 2, 24), torch.randn(3, 8), torch.tensor([0, 4, 9])
    want_q, want_k = rope.rotate_torch(pos, q[..., 16:], k)
    nope = q[..., :16].clone()
    got_q, got_k = rope(pos, q[..., 16:], k, q_out=q[..., 16:])
    assert got_q.data_ptr() == q[..., 16:].data_ptr() and torch.equal(q[..., 16:], want_q)
    assert torch.equal(got_k, want_k) and torch.equal(q[..., :16], nope)


@pytest.mark.parametrize("pairing", [0, 1, 2])
def test_the_compiled_launch_has_no_fused_multiply_add(pairing):
    """Built for sm_90 with the launch's own options, every product and sum is rounded on its own (PTX `.rn`
    ops, no `fma`), as torch's separate kernels round them; with default options the compiler would fuse."""
    from benchmarks.decode_sm90_check import compile_for_sm90
    from tierlm.kernels.decoupled_rope import _decoupled_rope_kernel, launch_options

    consts = dict(HALF=32, BLOCK_HALF=32, BLOCK_H=32, PAIRING=pairing)
    with cuda_compiler_or_skip():
        ptx = compile_for_sm90(_decoupled_rope_kernel, consts, **launch_options(32, 64)).asm["ptx"]
    assert "mul.rn.f32" in ptx and "fma.rn.f32" not in ptx
    assert "fma.rn.f32" in compile_for_sm90(_decoupled_rope_kernel, consts).asm["ptx"], "the check would see one"
