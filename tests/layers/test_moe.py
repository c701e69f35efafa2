"""SparseMoE against a naive per-token loop: routing (softmax, top-k, renormalization) and expert mixing."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tierlm.layers.moe import SparseMoE, route, tune_fused_moe

HIDDEN, INTER, EXPERTS = 24, 16, 8


def make_moe(top_k: int, renormalize: bool, seed: int = 0) -> SparseMoE:
    torch.manual_seed(seed)
    moe = SparseMoE(HIDDEN, INTER, EXPERTS, top_k, renormalize)
    with torch.no_grad():
        for p in moe.parameters():
            p.normal_(0.0, 0.3)
    return moe


def naive(moe: SparseMoE, x: torch.Tensor) -> torch.Tensor:
    """Token by token: probabilities of all experts, the k best, each expert's SwiGLU written out."""
    out = torch.zeros_like(x)
    for t in range(x.shape[0]):
        probs = torch.softmax(moe.gate.weight @ x[t], dim=-1)
        ranked = sorted(range(EXPERTS), key=lambda e: -probs[e].item())[:moe.top_k]
        total = sum(probs[e] for e in ranked) if moe.renormalize else 1.0
        for e in ranked:
            gate = moe.experts_gate_up[e, :INTER] @ x[t]
            up = moe.experts_gate_up[e, INTER:] @ x[t]
            out[t] += probs[e] / total * (moe.experts_down[e] @ (F.silu(gate) * up))
    return out


def assert_no_ties(moe: SparseMoE, x: torch.Tensor) -> None:
    """The k-th and (k+1)-th probabilities differ, so the selected set is unambiguous."""
    probs = torch.softmax(moe.gate(x), dim=-1).sort(dim=-1, descending=True).values
    if moe.top_k < EXPERTS:
        assert (probs[:, moe.top_k - 1] - probs[:, moe.top_k]).min() > 1e-6


@pytest.mark.parametrize("top_k", [1, 2, EXPERTS])
@pytest.mark.parametrize("renormalize", [True, False])
def test_matches_naive_loop(top_k, renormalize):
    moe = make_moe(top_k, renormalize)
    x = torch.randn(13, HIDDEN, generator=torch.Generator().manual_seed(1))
    assert_no_ties(moe, x)
    with torch.no_grad():
        torch.testing.assert_close(moe(x), naive(moe, x), rtol=1e-5, atol=1e-6)


def test_renormalized_weights_sum_to_one_and_rank_descending():
    logits = torch.randn(7, EXPERTS, generator=torch.Generator().manual_seed(2))
    weights, ids = route(logits, 3, renormalize=True)
    torch.testing.assert_close(weights.sum(-1), torch.ones(7))
    assert (weights[:, :-1] >= weights[:, 1:]).all()
    assert torch.equal(ids, logits.topk(3, dim=-1).indices)
    raw, _ = route(logits, 3, renormalize=False)
    torch.testing.assert_close(raw, torch.softmax(logits, -1).topk(3, dim=-1).values)


def test_one_token_and_unused_experts():
    moe = make_moe(2, True)
    x = torch.randn(1, HIDDEN, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():  # one token touches 2 of 8 experts; the other 6 are skipped
        torch.testing.assert_close(moe(x), naive(moe, x), rtol=1e-5, atol=1e-6)


def test_cpu_layers_keep_the_reference_path_untuned():
    """Tuning concerns CUDA layers only; a CPU model is left as is (and keeps the torch reference path)."""
    moe = make_moe(2, True)
    assert tune_fused_moe(nn.Sequential(moe)) == 0 and moe.fused_configs is None


def test_stacked_layout_and_gate_up_rows():
    moe = SparseMoE(HIDDEN, INTER, EXPERTS, 2, True)
    assert tuple(moe.experts_gate_up.shape) == (EXPERTS, 2 * INTER, HIDDEN)
    assert tuple(moe.experts_down.shape) == (EXPERTS, HIDDEN, INTER)
    assert (moe.shard_range(0), moe.shard_range(1)) == ((0, INTER), (INTER, 2 * INTER))


@pytest.mark.parametrize("top_k", [0, EXPERTS + 1])
def test_top_k_out_of_range(top_k):
    with pytest.raises(ValueError, match=f"top_k must be in 1..{EXPERTS}, got {top_k}"):
        SparseMoE(HIDDEN, INTER, EXPERTS, top_k, True)
