"""`y = x W^T (+ b)` for a handful of rows: the decode-time linear layers at small batch.

At batch 1-8 a linear layer reads its whole weight matrix to produce a few output rows, so its cost is the
weight read. cuBLAS picks tiles for these shapes that leave most SMs idle on small matrices (a 1024 x 4096
projection ran at about a quarter of the HBM bandwidth on an H200), so this kernel spreads the output
features over many programs, each streaming `BLOCK_N` weight rows through a `BLOCK_K`-wide loop and
reducing in float32 on the CUDA cores (tensor cores would sit mostly on padding rows). Every program reads
the few input rows whole; they stay in L2.

Rounding: one float32 accumulation per output, cast once, like cuBLAS; the summation order differs, so
results match cuBLAS to the dtype's rounding, not bit for bit. Callers use it only where the plan says it
is faster (`tierlm.kernels.gemv_plan`), for bf16 / fp16 weights.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import triton
import triton.language as tl

MAX_ROWS = 8  # the largest batch this kernel serves; larger ones go to cuBLAS


@dataclass(frozen=True)
class GemvConfig:
    """Launch parameters of one small-batch linear: weight rows per program, K tile, warps."""

    block_n: int = 4
    block_k: int = 512
    num_warps: int = 4

    def label(self) -> str:
        return f"n{self.block_n} k{self.block_k} w{self.num_warps}"


@triton.jit
def _gemv_kernel(x_ptr, w_ptr, b_ptr, out_ptr, M, N, K, stride_xm, stride_wn, stride_om,
                 HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                 EVEN_K: tl.constexpr):
    pid = tl.program_id(0)
    offs_n = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    offs_m = tl.arange(0, BLOCK_M)
    mask_m = offs_m < M
    offs_k = tl.arange(0, BLOCK_K)
    w_rows = w_ptr + offs_n.to(tl.int64)[:, None] * stride_wn
    x_rows = x_ptr + offs_m[:, None] * stride_xm
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + offs_k
        if EVEN_K:
            w = tl.load(w_rows + kk[None, :], mask=mask_n[:, None], other=0.0)
            x = tl.load(x_rows + kk[None, :], mask=mask_m[:, None], other=0.0)
        else:
            mask_k = kk < K
            w = tl.load(w_rows + kk[None, :], mask=mask_n[:, None] & mask_k[None, :], other=0.0)
            x = tl.load(x_rows + kk[None, :], mask=mask_m[:, None] & mask_k[None, :], other=0.0)
        acc += tl.sum(x.to(tl.float32)[:, None, :] * w.to(tl.float32)[None, :, :], axis=2)
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    tl.store(out_ptr + offs_m[:, None] * stride_om + offs_n[None, :], acc.to(out_ptr.dtype.element_ty),
             mask=mask_m[:, None] & mask_n[None, :])


def gemv(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
         config: GemvConfig = GemvConfig()) -> torch.Tensor:
    """`x @ weight.T + bias` for `x` of at most `MAX_ROWS` rows (leading dimensions flattened)."""
    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    m, k = x2.shape
    n = weight.shape[0]
    if m > MAX_ROWS:
        raise ValueError(f"gemv serves at most {MAX_ROWS} rows, got {m}")
    assert weight.shape[1] == k and weight.stride(1) == 1
    out = torch.empty(m, n, dtype=x.dtype, device=x.device)
    if m:
        _gemv_kernel[(triton.cdiv(n, config.block_n),)](
            x2, weight, bias if bias is not None else weight, out, m, n, k, x2.stride(0), weight.stride(0),
            out.stride(0), HAS_BIAS=bias is not None, BLOCK_M=triton.next_power_of_2(m), BLOCK_N=config.block_n,
            BLOCK_K=config.block_k, EVEN_K=k % config.block_k == 0, num_warps=config.num_warps)
    return out.view(*shape[:-1], n)
