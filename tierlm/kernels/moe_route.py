"""Top-k routing of a mixture-of-experts block in one launch: the router's logits in, each token's top-k expert
ids and weights out.

In torch, scoring, grouping, top-k, the optional renormalisation and the scaling are four to a dozen kernels
per MoE layer, each a few microseconds at decode while the data is a few hundred floats. Here one program
takes a token's row, in float32:
- scores: softmax (`exp(l - max) / sum`, as torch computes it) or sigmoid (`1 / (1 + exp(-l))`);
- the choice: the scores, plus a per-expert bias when given (DeepSeek-V3's `e_score_correction_bias`);
- groups (`num_groups` > 1): experts are split into equal consecutive groups, each group scored by its best
  choice ("max", DeepSeek-V2's group-limited greedy) or the sum of its two best ("top2", V3); only the
  `topk_group` best groups stay eligible (their order among ties: the lower group first). Outside them the
  choice is 0 ("max": V2 zeroes the scores) or minus infinity ("top2": V3 masks the biased choice);
- the k largest choices found by k passes of max (ties to the lower expert id; a NaN ranks last); each pick
  weighs its score (unbiased); then `w / (sum(w) + eps)` when renormalising, times `scale`.
The order of a token's k picks is by decreasing choice; callers must not depend on it (torch's unsorted
top-k gives no order either).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from tierlm.kernels.launch import next_power_of_2


@triton.jit
def _group_best(x, group, g, TOP2: tl.constexpr, BLOCK_E: tl.constexpr):
    """Group `g`'s score: its largest entry of `x`, or (TOP2) the sum of its two largest."""
    inside = group == g
    best = tl.max(tl.where(inside, x, -float("inf")), axis=0)
    if TOP2:
        lanes = tl.arange(0, BLOCK_E)
        first = tl.min(tl.where(inside & (x == best), lanes, BLOCK_E), axis=0)
        second = tl.max(tl.where(inside & (lanes != first), x, -float("inf")), axis=0)
        best += tl.where(second > -float("inf"), second, 0.0)  # a one-expert group: its best alone
    return best


@triton.jit
def _route_kernel(logits_ptr, bias_ptr, weights_ptr, ids_ptr, num_experts, stride_l, eps, scale,
                  TOP_K: tl.constexpr, BLOCK_E: tl.constexpr, RENORM: tl.constexpr, SIGMOID: tl.constexpr,
                  HAS_BIAS: tl.constexpr, GROUPS: tl.constexpr, TOPK_GROUP: tl.constexpr, TOP2: tl.constexpr,
                  BLOCK_G: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    e = tl.arange(0, BLOCK_E)
    ok = e < num_experts
    logits = tl.load(logits_ptr + t * stride_l + e, mask=ok, other=float("-inf")).to(tl.float32)
    if SIGMOID:
        probs = 1.0 / (1.0 + tl.exp(-logits))
    else:
        num = tl.exp(logits - tl.max(logits, axis=0))
        probs = num / tl.sum(num, axis=0)
    choice = probs
    if HAS_BIAS:
        choice = probs + tl.load(bias_ptr + e, mask=ok, other=0.0).to(tl.float32)
    # a NaN (a broken model's logits) ranks below every number, lanes past the experts below that: whatever
    # the row holds, the k picks are distinct experts that exist (torch's top-k also returns valid ids)
    left = tl.where(ok, tl.where(choice == choice, choice, -1.0e30), -3.0e30)
    if GROUPS > 1:
        group = e // (num_experts // GROUPS)
        gs = tl.arange(0, BLOCK_G)
        scores = tl.full([BLOCK_G], -3.0e30, dtype=tl.float32)
        for g in tl.static_range(GROUPS):
            scores = tl.where(gs == g, _group_best(left, group, g, TOP2, BLOCK_E), scores)
        keep = e < 0
        for _i in tl.static_range(TOPK_GROUP):
            best = tl.max(scores, axis=0)
            pick = tl.min(tl.where(scores == best, gs, BLOCK_G), axis=0)
            keep = keep | (group == pick)
            scores = tl.where(gs == pick, -4.0e30, scores)
        # V3 masks the choice outside the kept groups; V2 zeroes the scores there (then weights as well as
        # choice: such an expert is picked only when the kept groups hold fewer than k, as torch would)
        if TOP2:
            left = tl.where(keep | ~ok, left, -2.0e30)
        else:
            left = tl.where(keep | ~ok, left, 0.0)
            probs = tl.where(keep | ~ok, probs, 0.0)
    picked = tl.zeros([BLOCK_E], dtype=tl.int32)  # slot + 1 of each chosen expert, 0 for the rest
    total = 0.0
    for slot in tl.static_range(TOP_K):
        best = tl.max(left, axis=0)
        pick = tl.min(tl.where(left == best, e, BLOCK_E), axis=0)
        picked = tl.where(e == pick, slot + 1, picked)
        left = tl.where(e == pick, -5.0e30, left)
        if HAS_BIAS:  # the pick's weight is its unbiased score
            total += tl.sum(tl.where(e == pick, probs, 0.0), axis=0)
        else:  # the choice is the score (or, V2 outside its kept groups, both are 0)
            total += best
    slots = tl.where(picked > 0, picked - 1, 0)
    w = probs
    if RENORM:
        w = w / (total + eps)
    w = w * scale
    chosen = picked > 0
    tl.store(weights_ptr + t * TOP_K + slots, w.to(weights_ptr.dtype.element_ty), mask=chosen)
    tl.store(ids_ptr + t * TOP_K + slots, e.to(tl.int64), mask=chosen)


def route_topk(logits: torch.Tensor, top_k: int, renormalize: bool, eps: float = 0.0, scale: float = 1.0,
               weights_dtype: torch.dtype = torch.float32, *, sigmoid: bool = False,
               bias: torch.Tensor | None = None, num_groups: int = 1, topk_group: int = 1,
               group_score: str = "max") -> tuple[torch.Tensor, torch.Tensor]:
    """`logits` `[T, E]` (any float dtype, unit stride along E) -> (weights `[T, top_k]` in `weights_dtype`,
    ids `[T, top_k]` int64), as the module doc describes: softmax (or `sigmoid`) scores, plus `bias` `[E]` for
    the choice, within the `topk_group` best of `num_groups` groups (`group_score` "max" or "top2"), the
    `top_k` largest, divided by their sum + `eps` when `renormalize`, times `scale`."""
    tokens, experts = logits.shape
    assert logits.stride(1) == 1 and 1 <= top_k <= experts and group_score in ("max", "top2")
    assert experts % num_groups == 0 and 1 <= topk_group <= num_groups
    assert bias is None or (bias.shape == (experts,) and bias.is_contiguous())
    weights = torch.empty(tokens, top_k, dtype=weights_dtype, device=logits.device)
    ids = torch.empty(tokens, top_k, dtype=torch.int64, device=logits.device)
    if tokens:
        block = next_power_of_2(experts)
        _route_kernel[(tokens,)](logits, logits if bias is None else bias, weights, ids, experts, logits.stride(0),
                                 eps, scale, TOP_K=top_k, BLOCK_E=block, RENORM=renormalize, SIGMOID=sigmoid,
                                 HAS_BIAS=bias is not None, GROUPS=num_groups, TOPK_GROUP=topk_group,
                                 TOP2=group_score == "top2", BLOCK_G=next_power_of_2(num_groups),
                                 num_warps=1 if block <= 128 else 4)
    return weights, ids

