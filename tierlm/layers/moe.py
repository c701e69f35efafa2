"""Mixture-of-experts feed-forward: a router picks the top-k SwiGLU experts of each token and mixes their
outputs by its weights. `StackedExperts` holds the experts and computes the mix given the routing (shared by
every MoE family); `SparseMoE` adds Qwen3-MoE's softmax router with optional renormalization.

The expert weights are stacked, `[num_experts, ...]`, the layout a fused GPU kernel reads; the reference
computation here sorts the (token, expert) pairs by expert, runs every selected expert once on its tokens
and adds the weighted outputs back per token, in ascending expert order like the reference model, so fp32
results match it. On CUDA the fused Triton kernel (`tierlm.kernels.fused_moe`) does the same without reading
anything on the host, so it also serves CUDA-graph capture.
"""
from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Optional

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from tierlm.kernels.fused_moe import MoEConfig


def route(router_logits: torch.Tensor, top_k: int, renormalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k experts of each token and their weights (`[tokens, top_k]` each): softmax in float32 over all
    experts, then the k largest probabilities, divided by their sum when `renormalize`. On CUDA in one launch
    (`kernels.moe_route`)."""
    if router_logits.is_cuda:
        from tierlm.kernels.moe_route import route_topk

        return route_topk(router_logits, top_k, renormalize, weights_dtype=router_logits.dtype)
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


class StackedExperts(nn.Module):
    """`num_experts` SwiGLU experts stored stacked, the layout the fused GPU kernel reads: `experts_gate_up`
    `[num_experts, 2 * intermediate, hidden]` (gate rows first, then up) and `experts_down`
    `[num_experts, hidden, intermediate]`. Base of every MoE block: the block routes, `experts(x, weights,
    ids)` computes the weighted expert mix (the fused Triton kernel on CUDA, `experts_sorted` elsewhere).

    `CHECKPOINT_MAPPING` tells the loader how per-expert checkpoint tensors fill the stacked parameters (`*` is
    the expert index, the position along their first dimension); `shard_range` gives the gate/up rows.
    `fused_configs` (token-count bucket -> launch parameters, set by `tune_fused_moe`) steers the CUDA kernel;
    without it the kernel uses untuned defaults.
    """

    CHECKPOINT_MAPPING = MappingProxyType({
        "experts.*.gate_proj.weight": ("experts_gate_up", 0),
        "experts.*.up_proj.weight": ("experts_gate_up", 1),
        "experts.*.down_proj.weight": ("experts_down", None),
    })

    def __init__(self, hidden_size: int, intermediate_size: int, num_experts: int, top_k: int) -> None:
        super().__init__()
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k must be in 1..{num_experts}, got {top_k}")
        self.intermediate, self.top_k = intermediate_size, top_k
        self.experts_gate_up = nn.Parameter(torch.empty(num_experts, 2 * intermediate_size, hidden_size))
        self.experts_down = nn.Parameter(torch.empty(num_experts, hidden_size, intermediate_size))
        self.fused_configs: Mapping[int, MoEConfig] | None = None

    def shard_range(self, shard: int) -> tuple[int, int]:
        """Rows of one expert's `experts_gate_up` slice holding the gate (0) or up (1) projection."""
        return shard * self.intermediate, (shard + 1) * self.intermediate

    def extra_repr(self) -> str:
        return f"experts={self.experts_gate_up.shape[0]}, top_k={self.top_k}, intermediate={self.intermediate}"

    def experts(self, x: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor,
                add: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Sum over each token's experts `ids` `[tokens, top_k]` of their outputs times `weights` (any float
        dtype: products are rounded to `x`'s dtype), plus `add` (e.g. shared experts' output) when given. On
        CUDA nothing is read on the host and the add is part of the kernels' last launch."""
        if x.is_cuda:
            return self._fused(x, weights, ids, add)
        out = experts_sorted(x, self.experts_gate_up, self.experts_down, weights, ids)
        return out if add is None else out + add

    def _fused(self, x: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor,
               add: Optional[torch.Tensor]) -> torch.Tensor:
        from tierlm.kernels.fused_moe import fused_moe
        from tierlm.kernels.fused_moe_tune import bucket_of, default_config

        n = x.shape[0]
        cfg = self.fused_configs.get(bucket_of(n)) if self.fused_configs else None
        return fused_moe(x, self.experts_gate_up, self.experts_down, weights, ids, cfg or default_config(n), add)


class SparseMoE(StackedExperts):
    """Router (`gate`, a softmax over all experts) plus the stacked experts (Qwen3-MoE)."""

    def __init__(self, hidden_size: int, intermediate_size: int, num_experts: int, top_k: int,
                 renormalize: bool) -> None:
        super().__init__(hidden_size, intermediate_size, num_experts, top_k)
        self.renormalize = renormalize
        self.gate = nn.Linear(hidden_size, num_experts, bias=False)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, renormalize={self.renormalize}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights, ids = route(self.gate(x), self.top_k, self.renormalize)
        return self.experts(x, weights, ids)


def tune_fused_moe(model: nn.Module) -> int:
    """Give every CUDA MoE block (`StackedExperts`) of `model` its tuned launch parameters from the autotune
    store, tuning each distinct (shape, dtype, device) once. Returns the number of layers configured."""
    from tierlm.kernels.fused_moe_tune import tuned_configs

    tables: dict = {}
    done = 0
    for layer in model.modules():
        if not isinstance(layer, StackedExperts) or not layer.experts_gate_up.is_cuda:
            continue
        w = layer.experts_gate_up
        key = (tuple(w.shape), layer.top_k, w.dtype, w.device)
        if key not in tables:
            tables[key] = tuned_configs(w.shape[0], w.shape[2], layer.intermediate, layer.top_k, w.dtype, w.device)
        layer.fused_configs = tables[key]
        done += 1
    return done
