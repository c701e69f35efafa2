"""DeepSeek MoE on CPU: the routing the fused path consumes (grouped top-k; V2 softmax, V3 sigmoid plus score
bias; renormalization and scaling) equals a per-token loop written out from the rules, the whole block equals
a per-token mix of experts plus shared experts, and routing plus the kernel's expert alignment run on the
meta device, i.e. read nothing on the host (what CUDA-graph capture needs)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tierlm.kernels.fused_moe import moe_align
from tierlm.models.config import ModelConfig
from tierlm.models.deepseek_config import DeepseekConfig
from tierlm.models.deepseek_moe import DeepseekMoE

HIDDEN, EXPERTS, TOP_K, INTER = 24, 16, 4, 8
VARIANTS = {
    "v2_greedy": ("DeepseekV2ForCausalLM", dict(topk_method="greedy", routed_scaling_factor=1.0)),
    "v2_grouped_norm_scaled": ("DeepseekV2ForCausalLM", dict(topk_method="group_limited_greedy", n_group=4,
                                                             topk_group=2, norm_topk_prob=True,
                                                             routed_scaling_factor=1.5)),
    "v3_grouped_norm": ("DeepseekV3ForCausalLM", dict(n_group=4, topk_group=2)),
    "v3_grouped_raw": ("DeepseekV3ForCausalLM", dict(n_group=8, topk_group=3, norm_topk_prob=False)),
}


def config(variant: str) -> DeepseekConfig:
    arch, overrides = VARIANTS[variant]
    raw = dict(architectures=[arch], vocab_size=32, hidden_size=HIDDEN, intermediate_size=32, num_hidden_layers=2,
               num_attention_heads=2, n_routed_experts=EXPERTS, num_experts_per_tok=TOP_K,
               moe_intermediate_size=INTER, n_shared_experts=2, first_k_dense_replace=0, **overrides)
    return DeepseekConfig.from_model_config(ModelConfig.from_dict(raw))


def make_moe(variant: str, seed: int = 0) -> DeepseekMoE:
    torch.manual_seed(seed)
    moe = DeepseekMoE(config(variant), HIDDEN)
    with torch.no_grad():
        for p in moe.parameters():
            p.normal_(0.0, 0.5)
        if hasattr(moe.gate, "e_score_correction_bias"):  # as large as the score spread: it changes choices
            moe.gate.e_score_correction_bias.uniform_(-0.3, 0.3)
    return moe.eval()


def naive_route(moe: DeepseekMoE, x: torch.Tensor) -> list[dict[int, float]]:
    """Per token: {expert: weight}, the rules applied one token at a time with Python sorts."""
    cfg, gate = moe.gate.cfg, moe.gate
    size = EXPERTS // cfg.n_group
    out = []
    x = x.detach()
    for t in range(x.shape[0]):
        logits = [float(gate.weight[e].detach() @ x[t]) for e in range(EXPERTS)]
        if cfg.scoring == "sigmoid":
            scores = [1 / (1 + math.exp(-v)) for v in logits]
            choice = [s + float(b) for s, b in zip(scores, gate.e_score_correction_bias)]
            group_score = [sum(sorted(choice[g * size:(g + 1) * size])[-2:]) for g in range(cfg.n_group)]
        else:
            top = max(logits)
            exps = [math.exp(v - top) for v in logits]
            scores = [v / sum(exps) for v in exps]
            choice = list(scores)
            group_score = [max(choice[g * size:(g + 1) * size]) for g in range(cfg.n_group)]
        groups = sorted(range(cfg.n_group), key=lambda g: -group_score[g])[:cfg.topk_group]
        allowed = [e for e in range(EXPERTS) if e // size in groups]
        picked = sorted(allowed, key=lambda e: -choice[e])[:TOP_K]
        weights = {e: scores[e] for e in picked}
        if cfg.norm_topk_prob and (cfg.scoring == "sigmoid" or TOP_K > 1):
            total = sum(weights.values())
            weights = {e: w / total for e, w in weights.items()}
        out.append({e: w * cfg.routed_scaling_factor for e, w in weights.items()})
    return out


def tokens(n: int = 33, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, HIDDEN, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_routing_matches_per_token_rules(variant):
    moe = make_moe(variant)
    x = tokens()
    with torch.no_grad():
        weights, ids = moe.gate(x)
    assert weights.dtype == torch.float32 and ids.shape == weights.shape == (x.shape[0], TOP_K)
    for t, expected in enumerate(naive_route(moe, x)):
        got = dict(zip(ids[t].tolist(), weights[t].tolist()))
        assert set(got) == set(expected), f"token {t}: experts {sorted(got)} != {sorted(expected)}"
        for e, w in expected.items():
            assert got[e] == pytest.approx(w, rel=1e-5), f"token {t}, expert {e}"


def test_v3_bias_changes_the_choice_not_the_weights():
    moe = make_moe("v3_grouped_raw")
    x = tokens()
    with torch.no_grad():
        weights, ids = moe.gate(x)
        moe.gate.e_score_correction_bias.zero_()
        _, unbiased_ids = moe.gate(x)
        scores = torch.sigmoid(x @ moe.gate.weight.T)
    assert any(set(a) != set(b) for a, b in zip(ids.tolist(), unbiased_ids.tolist()))
    scale = moe.gate.cfg.routed_scaling_factor  # V3's default 2.5; this variant does not renormalize
    torch.testing.assert_close(weights, scores.gather(1, ids) * scale)


@pytest.mark.parametrize("variant", ["v2_grouped_norm_scaled", "v3_grouped_norm"])
def test_block_matches_per_token_mix_plus_shared_experts(variant):
    moe = make_moe(variant)
    x = tokens(9, seed=2)
    ref = torch.zeros_like(x)
    for t, picked in enumerate(naive_route(moe, x)):
        for e, w in picked.items():
            gate, up = (moe.experts_gate_up[e] @ x[t]).chunk(2)
            ref[t] += w * (moe.experts_down[e] @ (F.silu(gate) * up))
    with torch.no_grad():
        ref += moe.shared_experts(x)
        torch.testing.assert_close(moe(x), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_routing_and_alignment_read_nothing_on_the_host(variant):
    """On the meta device any host read of a value raises: the router and the fused kernel's alignment of
    (token, expert) pairs are pure device work, so a decode step can be captured in a CUDA graph."""
    with torch.device("meta"):
        moe = DeepseekMoE(config(variant), HIDDEN)
        weights, ids = moe.gate(torch.empty(5, HIDDEN))
        aligned = moe_align(ids, EXPERTS, 16)
    assert weights.is_meta and ids.shape == (5, TOP_K) and aligned.sorted_pairs.is_meta
