"""Softmax top-k routing kernel cases (`tierlm.kernels.moe_route`) against torch's softmax, top-k,
renormalisation and scaling, runnable in-process on a GPU or in a subprocess under Triton's interpreter:
`python -m tests.kernels.route_cases NAME...` (see cases.py)."""
from __future__ import annotations

import json
import sys

import torch

from tests.kernels.cases import CaseFn, run


def by_expert(weights: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each token's picks ordered by expert id (the kernel's and torch's orders differ)."""
    order = ids.argsort(dim=-1)
    return weights.gather(1, order), ids.gather(1, order)


def check_softmax_topk(device: str, dtype: torch.dtype, *, tokens: int, experts: int, top_k: int,
                       renormalize: bool, eps: float = 0.0, scale: float = 1.0, seed: int = 0) -> None:
    from tierlm.kernels.moe_route import softmax_topk

    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(tokens, experts + 3, generator=gen) * 3).to(device=device, dtype=dtype)[:, :experts]
    weights, ids = softmax_topk(logits, top_k, renormalize, eps, scale, weights_dtype=torch.float32)
    probs = logits.float().softmax(dim=-1)
    ref_w, ref_ids = probs.topk(top_k, dim=-1)
    if renormalize:
        ref_w = ref_w / (ref_w.sum(dim=-1, keepdim=True) + eps)
    ref_w = ref_w * scale
    assert weights.dtype == torch.float32 and ids.dtype == torch.int64 and ids.shape == (tokens, top_k)
    got_w, got_ids = by_expert(weights, ids)
    ref_w, ref_ids = by_expert(ref_w, ref_ids)
    assert torch.equal(got_ids.cpu(), ref_ids.cpu())
    assert torch.all(weights[:, :-1] >= weights[:, 1:]), "picks come by decreasing weight"
    torch.testing.assert_close(got_w.cpu(), ref_w.cpu(), rtol=2e-6, atol=1e-7)


def check_nan_logits_pick_valid_experts(device: str, dtype: torch.dtype) -> None:
    """A row of NaN logits, and one with a single NaN: the picks are still k distinct experts in range."""
    from tierlm.kernels.moe_route import softmax_topk

    logits = torch.randn(3, 10, generator=torch.Generator().manual_seed(4))
    logits[0] = float("nan")
    logits[1, 3] = float("nan")
    weights, ids = softmax_topk(logits.to(device=device, dtype=dtype), 4, renormalize=True)
    ids = ids.cpu()
    assert ids.min() >= 0 and ids.max() < 10
    assert all(len(set(row.tolist())) == 4 for row in ids)
    assert torch.isnan(weights[0].cpu()).all()  # as torch's: a NaN row stays NaN


def _cases() -> dict[str, CaseFn]:
    def route(**kw) -> CaseFn:
        return lambda device, dtype: check_softmax_topk(device, dtype, **kw)

    return {
        # Qwen3-MoE: renormalised, no epsilon
        "route_renorm": route(tokens=5, experts=16, top_k=4, renormalize=True),
        # DeepSeek-V2: not renormalised, scaled; an expert count that is not a power of two
        "route_scaled_odd_experts": route(tokens=3, experts=20, top_k=6, renormalize=False, scale=2.5, seed=1),
        "route_eps_one_expert": route(tokens=4, experts=8, top_k=1, renormalize=True, eps=1e-20, seed=2),
        "route_one_token_many_experts": route(tokens=1, experts=160, top_k=8, renormalize=True, seed=3),
        "route_every_expert": route(tokens=2, experts=6, top_k=6, renormalize=False, seed=5),
        "route_nan_logits": check_nan_logits_pick_valid_experts,
    }


ROUTE_CASES: dict[str, CaseFn] = _cases()

if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1:] or list(ROUTE_CASES), "cpu", [torch.float32], cases=ROUTE_CASES)))
