"""DeepSeek mixture of experts: routed SwiGLU experts picked per token, plus always-on shared experts.

Routing is all device-side tensor ops (no value is read on the host); the routed experts are stacked and
mixed by `StackedExperts` (the fused Triton kernel on CUDA, so the block is CUDA-graph capturable; the torch
reference elsewhere). Checkpoint names (`mlp.gate`, `mlp.experts.N.*`, `mlp.shared_experts`) map onto
`gate`, the stacked `experts_gate_up`/`experts_down` and `shared_experts` (`StackedExperts.CHECKPOINT_MAPPING`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tierlm.layers.mlp import GatedMLP
from tierlm.layers.moe import StackedExperts
from tierlm.models.deepseek_config import DeepseekConfig

__all__ = ["DeepseekMoE", "GatedMLP"]


class Router(nn.Module):
    """Top-k expert choice and weights per token, computed in float32.

    softmax (V2): scores = softmax(logits); `group_limited_greedy` first keeps the `topk_group` groups with
    the highest single score. sigmoid (V3): scores = sigmoid(logits); experts are chosen by score +
    `e_score_correction_bias` within the `topk_group` groups whose two best biased scores sum highest, and
    weighted by their unbiased score. Then optional renormalization (`norm_topk_prob`) and
    `routed_scaling_factor`. The weights stay float32 whatever the model dtype, like the reference's.
    """

    def __init__(self, cfg: DeepseekConfig, hidden: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.weight = nn.Parameter(torch.empty(cfg.n_routed_experts, hidden, dtype=torch.float32))
        if cfg.scoring == "sigmoid":
            self.e_score_correction_bias = nn.Parameter(torch.zeros(cfg.n_routed_experts, dtype=torch.float32),
                                                        requires_grad=False)

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        for p in self.parameters(recurse=False):  # cast back: routing runs in float32
            p.data = p.data.float()
        return self

    def _group_mask(self, choice: torch.Tensor, group_score: str) -> torch.Tensor:
        """Bool `[T, E]`: the experts inside each token's `topk_group` best groups."""
        cfg = self.cfg
        groups = choice.view(choice.shape[0], cfg.n_group, -1)
        if group_score == "max":
            per_group = groups.max(dim=-1).values
        else:
            per_group = groups.topk(min(2, groups.shape[-1]), dim=-1)[0].sum(dim=-1)
        best = per_group.topk(cfg.topk_group, dim=-1, sorted=False)[1]
        keep = torch.zeros_like(per_group).scatter_(1, best, 1.0).bool()
        return keep[:, :, None].expand_as(groups).reshape(choice.shape)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x `[T, hidden]` → (weights `[T, k]` float32, expert ids `[T, k]`)."""
        cfg = self.cfg
        logits = F.linear(x.float(), self.weight.float())
        # V3 renormalizes whenever asked (as transformers does); V2 only with more than one expert (as DeepSeek's
        # own code does: transformers' V2 never renormalizes, and the published V2 configs never ask)
        sigmoid = cfg.scoring == "sigmoid"
        renorm = cfg.norm_topk_prob and (sigmoid or cfg.num_experts_per_tok > 1)
        if logits.is_cuda:
            from tierlm.kernels.moe_route import route_topk  # one launch for the steps below

            grouped = sigmoid or cfg.topk_method == "group_limited_greedy"
            return route_topk(logits, cfg.num_experts_per_tok, renorm, 1e-20, cfg.routed_scaling_factor,
                              sigmoid=sigmoid, bias=self.e_score_correction_bias if sigmoid else None,
                              num_groups=cfg.n_group if grouped else 1, topk_group=cfg.topk_group if grouped else 1,
                              group_score="top2" if sigmoid else "max")
        if sigmoid:
            scores = logits.sigmoid()
            choice = scores + self.e_score_correction_bias
            choice = choice.masked_fill(~self._group_mask(choice, "top2"), float("-inf"))
            ids = choice.topk(cfg.num_experts_per_tok, dim=-1, sorted=False)[1]
            weights = scores.gather(1, ids)
        else:
            scores = logits.softmax(dim=-1)
            if cfg.topk_method == "group_limited_greedy":
                scores = scores.masked_fill(~self._group_mask(scores, "max"), 0.0)
            weights, ids = scores.topk(cfg.num_experts_per_tok, dim=-1, sorted=False)
        if renorm:
            weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
        return weights * cfg.routed_scaling_factor, ids


class DeepseekMoE(StackedExperts):
    """Routed experts (each token's top-k, weighted; stacked) plus the shared experts applied to every token."""

    def __init__(self, cfg: DeepseekConfig, hidden: int) -> None:
        super().__init__(hidden, cfg.moe_intermediate_size, cfg.n_routed_experts, cfg.num_experts_per_tok)
        self.gate = Router(cfg, hidden)
        self.shared_experts = (GatedMLP(hidden, cfg.moe_intermediate_size * cfg.n_shared_experts)
                               if cfg.n_shared_experts else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights, ids = self.gate(x)  # float32 weights: each expert output is scaled in float32, then rounded
        shared = self.shared_experts(x) if self.shared_experts is not None else None
        return self.experts(x, weights, ids, add=shared)  # routed mix + shared, rounded as `out + shared`
