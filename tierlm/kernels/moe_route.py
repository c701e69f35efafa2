"""Softmax top-k routing of a mixture-of-experts block in one launch: the router's logits in, each token's
top-k expert ids and weights out.

In torch, softmax, top-k, the optional renormalisation and the scaling are four to six kernels per MoE layer,
each a few microseconds at decode while the data is a few hundred floats. Here one program takes a token's
row: softmax in float32 (`exp(l - max) / sum`, as torch computes it), the k largest probabilities found by k
passes of max (ties to the lower expert id; a NaN ranks last), then `w / (sum(w) + eps)` when renormalising,
times `scale`. The order of a token's k picks is by decreasing weight; callers must not depend on it (torch's
unsorted top-k gives no order either).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from tierlm.kernels.launch import next_power_of_2


@triton.jit
def _softmax_topk_kernel(logits_ptr, weights_ptr, ids_ptr, num_experts, stride_l, eps, scale, TOP_K: tl.constexpr,
                         BLOCK_E: tl.constexpr, RENORM: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    e = tl.arange(0, BLOCK_E)
    ok = e < num_experts
    logits = tl.load(logits_ptr + t * stride_l + e, mask=ok, other=float("-inf")).to(tl.float32)
    num = tl.exp(logits - tl.max(logits, axis=0))
    probs = num / tl.sum(num, axis=0)
    # a NaN probability (a broken model's logits) ranks below every number, lanes past the experts below that:
    # whatever the row holds, the k picks are distinct experts that exist (torch's top-k also returns valid ids)
    left = tl.where(ok, tl.where(probs == probs, probs, -1.0), -3.0)
    picked = tl.zeros([BLOCK_E], dtype=tl.int32)  # slot + 1 of each chosen expert, 0 for the rest
    total = 0.0
    for slot in tl.static_range(TOP_K):
        best = tl.max(left, axis=0)
        pick = tl.min(tl.where(left == best, e, BLOCK_E), axis=0)
        picked = tl.where(e == pick, slot + 1, picked)
        left = tl.where(e == pick, -2.0, left)
        total += best
    slots = tl.where(picked > 0, picked - 1, 0)
    w = probs
    if RENORM:
        w = w / (total + eps)
    w = w * scale
    chosen = picked > 0
    tl.store(weights_ptr + t * TOP_K + slots, w.to(weights_ptr.dtype.element_ty), mask=chosen)
    tl.store(ids_ptr + t * TOP_K + slots, e.to(tl.int64), mask=chosen)


def softmax_topk(logits: torch.Tensor, top_k: int, renormalize: bool, eps: float = 0.0, scale: float = 1.0,
                 weights_dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """`logits` `[T, E]` (any float dtype, unit stride along E) -> (weights `[T, top_k]` in `weights_dtype`,
    ids `[T, top_k]` int64): softmax over the experts in float32, the `top_k` largest, divided by their sum +
    `eps` when `renormalize`, times `scale`."""
    tokens, experts = logits.shape
    assert logits.stride(1) == 1 and 1 <= top_k <= experts
    weights = torch.empty(tokens, top_k, dtype=weights_dtype, device=logits.device)
    ids = torch.empty(tokens, top_k, dtype=torch.int64, device=logits.device)
    if tokens:
        block = next_power_of_2(experts)
        _softmax_topk_kernel[(tokens,)](logits, weights, ids, experts, logits.stride(0), eps, scale, TOP_K=top_k,
                                        BLOCK_E=block, RENORM=renormalize, num_warps=1 if block <= 128 else 4)
    return weights, ids
