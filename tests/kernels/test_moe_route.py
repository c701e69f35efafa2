"""Top-k routing kernel against torch (compiled on a GPU, else interpreted), and what each router passes it."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("triton")

from tests.kernels.cases import run  # noqa: E402
from tests.kernels.interp import assert_case_ok, run_interpreted  # noqa: E402
from tests.kernels.route_cases import ROUTE_CASES  # noqa: E402

GPU_DTYPES = [torch.bfloat16, torch.float16, torch.float32]


@pytest.fixture(scope="module")
def interpreted() -> dict[str, str]:
    return run_interpreted("tests.kernels.route_cases", list(ROUTE_CASES))


@pytest.mark.parametrize("name", list(ROUTE_CASES))
def test_route_topk_case(name: str, request: pytest.FixtureRequest) -> None:
    assert_case_ok(name, request, lambda: run([name], "cuda", GPU_DTYPES, cases=ROUTE_CASES))


@pytest.fixture
def fake_cuda(monkeypatch):
    """Every tensor claims CUDA; the kernel's calls are recorded and answered with fixed picks."""
    from tierlm.kernels import moe_route

    calls = []

    def fake(logits, top_k, renormalize, eps=0.0, scale=1.0, weights_dtype=torch.float32, *, sigmoid=False,
             bias=None, num_groups=1, topk_group=1, group_score="max"):
        calls.append(dict(top_k=top_k, renormalize=renormalize, eps=eps, scale=scale, dtype=weights_dtype,
                          sigmoid=sigmoid, bias=bias is not None, groups=(num_groups, topk_group, group_score)))
        return "weights", "ids"

    monkeypatch.setattr(moe_route, "route_topk", fake)
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    return calls


def test_qwen3_routing_takes_the_kernel_in_the_logits_dtype(fake_cuda):
    from tierlm.layers.moe import route

    assert route(torch.randn(2, 8).bfloat16(), 2, renormalize=True) == ("weights", "ids")
    assert fake_cuda == [dict(top_k=2, renormalize=True, eps=0.0, scale=1.0, dtype=torch.bfloat16, sigmoid=False,
                              bias=False, groups=(1, 1, "max"))]


@pytest.mark.parametrize("scoring,method,norm,k,renorm,groups", [
    ("softmax", "greedy", False, 6, False, (1, 1, "max")), ("softmax", "greedy", True, 6, True, (1, 1, "max")),
    ("softmax", "greedy", True, 1, False, (1, 1, "max")),
    ("softmax", "group_limited_greedy", False, 6, False, (4, 2, "max")),
    ("sigmoid", "noaux_tc", True, 6, True, (4, 2, "top2")), ("sigmoid", "noaux_tc", True, 1, True, (4, 2, "top2"))])
def test_deepseek_routing_takes_the_kernel(fake_cuda, scoring, method, norm, k, renorm, groups):
    from tierlm.models.deepseek_moe import Router

    cfg = SimpleNamespace(n_routed_experts=8, scoring=scoring, topk_method=method, n_group=4, topk_group=2,
                          num_experts_per_tok=k, norm_topk_prob=norm, routed_scaling_factor=1.5)
    router = Router(cfg, 4)
    with torch.no_grad():
        router.weight.normal_()
    assert router(torch.randn(3, 4)) == ("weights", "ids")
    assert fake_cuda == [dict(top_k=k, renormalize=renorm, eps=1e-20, scale=1.5, dtype=torch.float32,
                              sigmoid=scoring == "sigmoid", bias=scoring == "sigmoid", groups=groups)]
