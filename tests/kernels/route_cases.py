"""Top-k routing kernel cases (`tierlm.kernels.moe_route`) against torch's softmax, top-k, renormalisation and
scaling, and against DeepSeek's torch router (grouped V2 routing, V3's biased sigmoid routing), runnable
in-process on a GPU or in a subprocess under Triton's interpreter: `python -m tests.kernels.route_cases NAME...`
(see cases.py)."""
from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import torch

from tests.kernels.cases import CaseFn, run


def by_expert(weights: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each token's picks ordered by expert id (the kernel's and torch's orders differ)."""
    order = ids.argsort(dim=-1)
    return weights.gather(1, order), ids.gather(1, order)


def check_softmax_topk(device: str, dtype: torch.dtype, *, tokens: int, experts: int, top_k: int,
                       renormalize: bool, eps: float = 0.0, scale: float = 1.0, seed: int = 0) -> None:
    from tierlm.kernels.moe_route import route_topk

    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(tokens, experts + 3, generator=gen) * 3).to(device=device, dtype=dtype)[:, :experts]
    weights, ids = route_topk(logits, top_k, renormalize, eps, scale, weights_dtype=torch.float32)
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
    from tierlm.kernels.moe_route import route_topk

    logits = torch.randn(3, 10, generator=torch.Generator().manual_seed(4))
    logits[0] = float("nan")
    logits[1, 3] = float("nan")
    weights, ids = route_topk(logits.to(device=device, dtype=dtype), 4, renormalize=True)
    ids = ids.cpu()
    assert ids.min() >= 0 and ids.max() < 10
    assert all(len(set(row.tolist())) == 4 for row in ids)
    assert torch.isnan(weights[0].cpu()).all()  # as torch's: a NaN row stays NaN


def check_deepseek_router(device: str, dtype: torch.dtype, *, experts: int, groups: int, topk_group: int, top_k: int,
                          sigmoid: bool, renormalize: bool, scale: float, tokens: int = 5, seed: int = 0) -> None:
    """The kernel with the arguments DeepSeek's router passes it on CUDA against that router's torch path (CPU):
    the same experts, weights to float32 rounding."""
    from tierlm.kernels.moe_route import route_topk

    gen = torch.Generator().manual_seed(seed)
    router = _router(experts, groups, topk_group, top_k, sigmoid, renormalize, scale, hidden=16)
    with torch.no_grad():
        router.weight.copy_(torch.randn(experts, 16, generator=gen))
        if sigmoid:
            router.e_score_correction_bias.copy_(torch.randn(experts, generator=gen) * 0.5)
    x = torch.randn(tokens, 16, generator=gen)
    ref_w, ref_ids = router(x)  # CPU: the torch path
    logits = (x @ router.weight.T).to(device=device, dtype=dtype)
    bias = router.e_score_correction_bias.to(device) if sigmoid else None
    weights, ids = route_topk(logits, top_k, renormalize, 1e-20, scale, sigmoid=sigmoid, bias=bias,
                              num_groups=groups, topk_group=topk_group, group_score="top2" if sigmoid else "max")
    if dtype != torch.float32:  # the reference on the logits the kernel read
        ref_w, ref_ids = _torch_route(router, logits.float().cpu())
    got_w, got_ids = by_expert(weights.cpu(), ids.cpu())
    ref_w, ref_ids = by_expert(ref_w, ref_ids)
    assert torch.equal(got_ids, ref_ids)
    torch.testing.assert_close(got_w, ref_w, rtol=2e-6, atol=1e-7)


def _router(experts: int, groups: int, topk_group: int, top_k: int, sigmoid: bool, renormalize: bool,
            scale: float = 1.0, hidden: int = 0):
    """DeepSeek's router (V3's with `sigmoid`, V2's group-limited greedy without), `hidden` wide (default: as
    many as experts, for `_torch_route`)."""
    from tierlm.models.deepseek_moe import Router

    cfg = SimpleNamespace(n_routed_experts=experts, scoring="sigmoid" if sigmoid else "softmax",
                          topk_method="noaux_tc" if sigmoid else "group_limited_greedy", n_group=groups,
                          topk_group=topk_group, num_experts_per_tok=top_k, norm_topk_prob=renormalize,
                          routed_scaling_factor=scale)
    return Router(cfg, hidden or experts)


def check_groups_ranked_by_their_two_best(device: str, dtype: torch.dtype) -> None:
    """V3 ranks a group by the sum of its two best scores: a group with one high score loses to one with two
    fairly high ones (ranked by the best alone, it would win)."""
    from tierlm.kernels.moe_route import route_topk

    logits = torch.full((1, 16), -5.0)
    logits[0, 0] = 3.0  # group 0: one high score
    logits[0, 4:6] = 2.0  # group 1: two fairly high ones
    ref_w, ref_ids = _torch_route(_router(16, 4, 1, 2, sigmoid=True, renormalize=True), logits)
    weights, ids = route_topk(logits.to(device=device, dtype=dtype), 2, True, 1e-20, sigmoid=True,
                              bias=torch.zeros(16, device=device), num_groups=4, topk_group=1, group_score="top2")
    assert sorted(ref_ids[0].tolist()) == [4, 5] and sorted(ids[0].tolist()) == [4, 5]
    torch.testing.assert_close(weights.cpu().sort().values, ref_w.sort().values, rtol=2e-6, atol=1e-7)


def check_v2_picks_past_the_kept_groups_weigh_zero(device: str, dtype: torch.dtype) -> None:
    """V2 with more picks than its kept groups hold: the extra picks come from outside them with weight 0, as
    torch's zeroed scores give (which of the zeros torch picks is unspecified: only the weights are compared)."""
    from tierlm.kernels.moe_route import route_topk

    logits = torch.randn(3, 20, generator=torch.Generator().manual_seed(7)).to(dtype).float()  # as the kernel reads
    ref_w, _ = _torch_route(_router(20, 4, 1, 7, sigmoid=False, renormalize=False), logits)
    weights, ids = route_topk(logits.to(device=device, dtype=dtype), 7, False, 1e-20, num_groups=4, topk_group=1)
    assert all(len(set(row.tolist())) == 7 for row in ids.cpu())
    assert (ref_w == 0).sum(dim=-1).tolist() == [2, 2, 2]
    torch.testing.assert_close(weights.cpu().sort(dim=-1).values, ref_w.sort(dim=-1).values, rtol=2e-6, atol=1e-7)


def _torch_route(router, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The router's torch path on given logits (its weight replaced by the identity)."""
    with torch.no_grad():
        saved = router.weight.data
        router.weight.data = torch.eye(logits.shape[1])
        try:
            return router(logits)
        finally:
            router.weight.data = saved


def _cases() -> dict[str, CaseFn]:
    def route(**kw) -> CaseFn:
        return lambda device, dtype: check_softmax_topk(device, dtype, **kw)

    def ds(**kw) -> CaseFn:
        return lambda device, dtype: check_deepseek_router(device, dtype, **kw)

    return {
        # Qwen3-MoE: renormalised, no epsilon
        "route_renorm": route(tokens=5, experts=16, top_k=4, renormalize=True),
        # DeepSeek-V2: not renormalised, scaled; an expert count that is not a power of two
        "route_scaled_odd_experts": route(tokens=3, experts=20, top_k=6, renormalize=False, scale=2.5, seed=1),
        "route_eps_one_expert": route(tokens=4, experts=8, top_k=1, renormalize=True, eps=1e-20, seed=2),
        "route_one_token_many_experts": route(tokens=1, experts=160, top_k=8, renormalize=True, seed=3),
        "route_every_expert": route(tokens=2, experts=6, top_k=6, renormalize=False, seed=5),
        "route_nan_logits": check_nan_logits_pick_valid_experts,
        # DeepSeek-V3: 8 groups, the best 4 by their two best biased scores, renormalised, scaled
        "route_v3_groups": ds(experts=64, groups=8, topk_group=4, top_k=8, sigmoid=True, renormalize=True,
                              scale=2.5),
        "route_v3_one_group": ds(experts=64, groups=1, topk_group=1, top_k=6, sigmoid=True, renormalize=True,
                                 scale=1.0, seed=1),
        "route_v3_one_expert_groups": ds(experts=8, groups=8, topk_group=3, top_k=3, sigmoid=True, renormalize=False,
                                         scale=1.0, seed=2),
        # DeepSeek-V2's group-limited greedy: groups of 5 experts, the best 3 by their best score
        "route_v2_grouped": ds(experts=40, groups=8, topk_group=3, top_k=6, sigmoid=False, renormalize=False,
                               scale=16.0, seed=3),
        "route_v2_grouped_renorm": ds(experts=20, groups=4, topk_group=2, top_k=4, sigmoid=False, renormalize=True,
                                      scale=1.0, seed=4),
        "route_v3_groups_ranked_by_two_best": check_groups_ranked_by_their_two_best,
        "route_v2_extra_picks_weigh_zero": check_v2_picks_past_the_kept_groups_weigh_zero,
    }


ROUTE_CASES: dict[str, CaseFn] = _cases()

if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1:] or list(ROUTE_CASES), "cpu", [torch.float32], cases=ROUTE_CASES)))
