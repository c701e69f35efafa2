"""Sparse mixture-of-experts feed-forward (Qwen3-MoE style): a softmax router picks the top-k SwiGLU experts
of each token and mixes their outputs by the (optionally renormalized) router probabilities.

The expert weights are stacked, `[num_experts, ...]`, the layout a fused GPU kernel reads; the reference
computation here sorts the (token, expert) pairs by expert, runs every selected expert once on its tokens
and adds the weighted outputs back per token, in ascending expert order like the reference model, so fp32
results match it.
"""
from __future__ import annotations

from types import MappingProxyType

import torch
import torch.nn.functional as F
from torch import nn


def route(router_logits: torch.Tensor, top_k: int, renormalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k experts of each token and their weights (`[tokens, top_k]` each): softmax in float32 over all
    experts, then the k largest probabilities, divided by their sum when `renormalize`."""
    probs = torch.softmax(router_logits, dim=-1, dtype=torch.float32)
    weights, ids = torch.topk(probs, top_k, dim=-1)
    if renormalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights.to(router_logits.dtype), ids


def _expert(x: torch.Tensor, gate_up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    gate, up = F.linear(x, gate_up).chunk(2, dim=-1)
    return F.linear(F.silu(gate) * up, down)


def experts_sorted(x: torch.Tensor, gate_up: torch.Tensor, down: torch.Tensor, weights: torch.Tensor,
                   ids: torch.Tensor) -> torch.Tensor:
    """Weighted sum of the selected experts' outputs: each expert runs once, on the tokens routed to it.

    `x` `[tokens, hidden]`, `gate_up` `[experts, 2 * inter, hidden]`, `down` `[experts, hidden, inter]`,
    `weights`/`ids` `[tokens, top_k]`. Reads the per-expert counts on the host (not CUDA-graph capturable).
    """
    top_k = ids.shape[1]
    flat = ids.reshape(-1)
    order = torch.argsort(flat, stable=True)  # (token, slot) pairs grouped by expert
    counts = torch.bincount(flat, minlength=gate_up.shape[0]).tolist()
    flat_weights = weights.reshape(-1, 1)
    out = torch.zeros_like(x)
    start = 0
    for e, n in enumerate(counts):
        if n == 0:
            continue
        pairs = order[start:start + n]
        start += n
        tokens = pairs // top_k  # distinct: a token selects an expert at most once
        y = _expert(x[tokens], gate_up[e], down[e]) * flat_weights[pairs]
        out.index_add_(0, tokens, y.to(out.dtype))
    return out


def experts_dense(x: torch.Tensor, gate_up: torch.Tensor, down: torch.Tensor, weights: torch.Tensor,
                  ids: torch.Tensor) -> torch.Tensor:
    """Same result as `experts_sorted` without reading anything on the host (CUDA-graph capturable): every
    expert runs on every token and unselected experts get weight 0. num_experts / top_k times the work."""
    mix = torch.zeros(x.shape[0], gate_up.shape[0], dtype=weights.dtype, device=x.device)
    mix.scatter_(1, ids, weights)
    out = torch.zeros_like(x)
    for e in range(gate_up.shape[0]):
        out += (_expert(x, gate_up[e], down[e]) * mix[:, e:e + 1]).to(out.dtype)
    return out


class SparseMoE(nn.Module):
    """Router (`gate`) plus `num_experts` SwiGLU experts stored stacked: `experts_gate_up`
    `[num_experts, 2 * intermediate, hidden]` (gate rows first, then up) and `experts_down`
    `[num_experts, hidden, intermediate]`.

    `CHECKPOINT_MAPPING` tells the loader how per-expert checkpoint tensors fill the stacked parameters (`*` is
    the expert index, the position along their first dimension); `shard_range` gives the gate/up rows.
    """

    CHECKPOINT_MAPPING = MappingProxyType({
        "experts.*.gate_proj.weight": ("experts_gate_up", 0),
        "experts.*.up_proj.weight": ("experts_gate_up", 1),
        "experts.*.down_proj.weight": ("experts_down", None),
    })

    def __init__(self, hidden_size: int, intermediate_size: int, num_experts: int, top_k: int,
                 renormalize: bool) -> None:
        super().__init__()
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k must be in 1..{num_experts}, got {top_k}")
        self.intermediate = intermediate_size
        self.top_k, self.renormalize = top_k, renormalize
        self.gate = nn.Linear(hidden_size, num_experts, bias=False)
        self.experts_gate_up = nn.Parameter(torch.empty(num_experts, 2 * intermediate_size, hidden_size))
        self.experts_down = nn.Parameter(torch.empty(num_experts, hidden_size, intermediate_size))

    def shard_range(self, shard: int) -> tuple[int, int]:
        """Rows of one expert's `experts_gate_up` slice holding the gate (0) or up (1) projection."""
        return shard * self.intermediate, (shard + 1) * self.intermediate

    def extra_repr(self) -> str:
        return (f"experts={self.experts_gate_up.shape[0]}, top_k={self.top_k}, "
                f"intermediate={self.intermediate}, renormalize={self.renormalize}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights, ids = route(self.gate(x), self.top_k, self.renormalize)
        if x.is_cuda and torch.cuda.is_current_stream_capturing():
            return experts_dense(x, self.experts_gate_up, self.experts_down, weights, ids)
        return experts_sorted(x, self.experts_gate_up, self.experts_down, weights, ids)
