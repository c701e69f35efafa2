"""The last step of a mixture-of-experts block: each token's top-k weighted expert outputs summed, plus
optionally a second term (the shared experts' output), in one launch.

torch's `sum(dim=1)` over the k rows of a token took several microseconds per decode layer for a few
thousand values, and the shared experts' add was one more launch. Rounding as torch's: the k rows summed in
float32 and rounded once; the second term added to that rounded sum and rounded again (`out + add`).
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from tierlm.kernels.launch import cdiv, next_power_of_2

BLOCK = 1024  # columns per program


@triton.jit
def _combine_kernel(rows_ptr, add_ptr, out_ptr, hidden, stride_r, stride_a, stride_o, TOP_K: tl.constexpr,
                    BLOCK_N: tl.constexpr, HAS_ADD: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    ok = cols < hidden
    acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    for j in tl.static_range(TOP_K):
        acc += tl.load(rows_ptr + (t * TOP_K + j) * stride_r + cols, mask=ok, other=0.0).to(tl.float32)
    dtype = out_ptr.dtype.element_ty
    y = acc.to(dtype)
    if HAS_ADD:
        y = (y.to(tl.float32) + tl.load(add_ptr + t * stride_a + cols, mask=ok, other=0.0).to(tl.float32)).to(dtype)
    tl.store(out_ptr + t * stride_o + cols, y, mask=ok)


def combine(per_pair: torch.Tensor, top_k: int, add: Optional[torch.Tensor] = None) -> torch.Tensor:
    """`per_pair` `[tokens * top_k, hidden]` (a token's k rows together) -> `[tokens, hidden]`: the sum of each
    token's rows, plus `add` `[tokens, hidden]` when given."""
    pairs, hidden = per_pair.shape
    tokens = pairs // top_k
    assert per_pair.stride(1) == 1 and (add is None or (add.shape == (tokens, hidden) and add.stride(1) == 1))
    out = torch.empty(tokens, hidden, dtype=per_pair.dtype, device=per_pair.device)
    if tokens:
        block = min(BLOCK, next_power_of_2(hidden))
        a = add if add is not None else out
        _combine_kernel[(tokens, cdiv(hidden, block))](
            per_pair, a, out, hidden, per_pair.stride(0), a.stride(0), out.stride(0), TOP_K=top_k, BLOCK_N=block,
            HAS_ADD=add is not None, num_warps=4)
    return out
