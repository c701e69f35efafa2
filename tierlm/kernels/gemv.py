"""`y = x W^T (+ b)` for a handful of rows: the decode-time linear layers at small batch.

At batch 1-8 a linear layer reads its whole weight matrix to produce a few output rows, so its cost is the
weight read. cuBLAS picks tiles for these shapes that leave most SMs idle on small matrices (a 1024 x 4096
projection ran at about a quarter of the HBM bandwidth on an H200), so this kernel spreads the output
features over many programs, each streaming `BLOCK_N` weight rows through a `BLOCK_K`-wide loop and
reducing in float32 on the CUDA cores (tensor cores would sit mostly on padding rows). Every program reads
the few input rows whole; they stay in L2.

Rounding: one float32 accumulation per output, cast once, like cuBLAS; the summation order differs, so
results match cuBLAS to the dtype's rounding, not bit for bit. A fused prologue rounds its output as the
unfused layer would, except the pipelined launch's RMSNorm: it scales the float32 sums by the statistic at
the end (so it needs no pass over the input before the weights stream), where the unfused layers round the
normalised input to the dtype first. Callers use it only where the plan says it is faster
(`tierlm.kernels.gemv_tune`), for bf16 / fp16 weights.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

from tierlm.kernels.fused import silu_mul_rounded
from tierlm.kernels.launch import cdiv, next_power_of_2
from tierlm.kernels.pdl import launch_kwargs

MAX_ROWS = 8  # the largest batch this kernel serves; larger ones go to cuBLAS


@dataclass(frozen=True)
class GemvConfig:
    """Launch parameters of one small-batch linear: weight rows per program, K tile, warps."""

    block_n: int = 4
    block_k: int = 512
    num_warps: int = 4
    # Pipelined: the input tile is loaded one iteration ahead with the weight tile, and products are summed
    # per lane across the K loop and reduced once at the end, so no iteration waits on an input load or on a
    # cross-lane reduction before the next weight tile goes out.
    pipelined: bool = False
    ahead: int = 1  # weight tiles in flight ahead of the one being summed (1 or 2; 2 only when pipelined)

    def __post_init__(self) -> None:
        if self.ahead not in (1, 2) or (self.ahead == 2 and not self.pipelined):
            raise ValueError(f"gemv launch: ahead must be 1, or 2 with pipelined=True; got {self.ahead}")

    def label(self) -> str:
        return (f"n{self.block_n} k{self.block_k} w{self.num_warps}" + (" p" if self.pipelined else "")
                + (f"{self.ahead}" if self.ahead != 1 else ""))


@triton.jit
def _input_load(x_rows, r_rows, nw_ptr, kk, mask, K, PROLOGUE: tl.constexpr, HAS_RES: tl.constexpr):
    """What the input rows at columns `kk` are made of: (x, the residual or the up half, the norm weight);
    a part the prologue does not use is not read (`x` stands in for it)."""
    x = tl.load(x_rows + kk[None, :], mask=mask, other=0.0)
    second = x
    if PROLOGUE == 1 and HAS_RES:
        second = tl.load(r_rows + kk[None, :], mask=mask, other=0.0)
    if PROLOGUE == 2:
        second = tl.load(x_rows + K + kk[None, :], mask=mask, other=0.0)
    nw = x
    if PROLOGUE == 1:
        nw = tl.load(nw_ptr + kk, mask=kk < K, other=0.0)
    return x, second, nw


@triton.jit
def _input_make(x, second, nw, rstd, PROLOGUE: tl.constexpr, HAS_RES: tl.constexpr):
    """The kernel's input tile from its parts, after its prologue, rounded as the unfused layers round;
    also x (+ residual), the new residual stream."""
    dtype = x.dtype
    if PROLOGUE == 1:  # RMSNorm of (x + residual), as `_rmsnorm_kernel` computes it
        if HAS_RES:
            x = (x.to(tl.float32) + second.to(tl.float32)).to(dtype)
        y = (x.to(tl.float32) * rstd[:, None]).to(dtype)
        return (nw.to(tl.float32)[None, :] * y.to(tl.float32)).to(dtype), x
    if PROLOGUE == 2:  # silu(gate) * up of a [gate | up] row, as `_silu_mul_kernel` computes it
        return silu_mul_rounded(x, second), x
    return x, x


@triton.jit
def _input_tile(x_rows, r_rows, nw_ptr, kk, mask, rstd, K, PROLOGUE: tl.constexpr, HAS_RES: tl.constexpr):
    """The kernel's input rows at columns `kk`, after its prologue (see `_input_make`)."""
    x, second, nw = _input_load(x_rows, r_rows, nw_ptr, kk, mask, K, PROLOGUE, HAS_RES)
    return _input_make(x, second, nw, rstd, PROLOGUE, HAS_RES)


@triton.jit
def _gemv_kernel(x_ptr, w_ptr, b_ptr, out_ptr, r_ptr, nw_ptr, r_out_ptr, M, N, K, stride_xm, stride_rm, stride_wn,
                 stride_om, stride_ro, eps, HAS_BIAS: tl.constexpr, PROLOGUE: tl.constexpr, HAS_RES: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, STAT_K: tl.constexpr,
                 PIPE: tl.constexpr, AHEAD: tl.constexpr, PDL: tl.constexpr):
    # Weights never depend on the kernel before this one, so each tile is loaded one iteration ahead and the
    # first before anything else: under PDL (`tierlm.kernels.pdl`) that load overlaps the predecessor.
    if PDL:
        gdc_launch_dependents()
    pid = tl.program_id(0)
    offs_n = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    offs_m = tl.arange(0, BLOCK_M)
    mask_m = offs_m < M
    offs_k = tl.arange(0, BLOCK_K)
    w_rows = w_ptr + offs_n.to(tl.int64)[:, None] * stride_wn
    x_rows = x_ptr + offs_m[:, None] * stride_xm
    r_rows = r_ptr + offs_m[:, None] * stride_rm
    w_next = tl.load(w_rows + offs_k[None, :], mask=mask_n[:, None] & (offs_k < K)[None, :], other=0.0)
    if AHEAD == 2:
        w_next2 = tl.load(w_rows + (offs_k + BLOCK_K)[None, :], mask=mask_n[:, None] & (offs_k + BLOCK_K < K)[None, :],
                          other=0.0)
    if PDL:
        gdc_wait()
    rstd = tl.zeros([BLOCK_M], dtype=tl.float32)
    if PROLOGUE == 1 and not PIPE:  # every program takes the rows' statistic itself (they are few and come
        # from L2) before its products, in tiles of STAT_K columns (the whole row where it fits): each tile is
        # one round trip before the sum
        sq = tl.zeros([BLOCK_M], dtype=tl.float32)
        for k0 in range(0, K, STAT_K):
            kk = k0 + tl.arange(0, STAT_K)
            mask = mask_m[:, None] & (kk < K)[None, :]
            x = tl.load(x_rows + kk[None, :], mask=mask, other=0.0)
            if HAS_RES:
                x = (x.to(tl.float32) + tl.load(r_rows + kk[None, :], mask=mask, other=0.0).to(tl.float32)).to(x.dtype)
            x32 = x.to(tl.float32)
            sq += tl.sum(x32 * x32, axis=1)
        rstd = 1.0 / tl.sqrt(sq / K + eps)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    if PIPE:  # per-lane sums over the whole K loop, one reduction at the end
        acc3 = tl.zeros([BLOCK_M, BLOCK_N, BLOCK_K], dtype=tl.float32)
        sq3 = tl.zeros([BLOCK_M, BLOCK_K], dtype=tl.float32)  # the RMSNorm statistic, summed along the products
        x_next, s_next, nw_next = _input_load(x_rows, r_rows, nw_ptr, offs_k, mask_m[:, None] & (offs_k < K)[None, :],
                                              K, PROLOGUE, HAS_RES)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + offs_k
        mask_k = kk < K
        w = w_next
        if AHEAD == 2:
            w_next = w_next2
            w_next2 = tl.load(w_rows + (kk + 2 * BLOCK_K)[None, :],
                              mask=mask_n[:, None] & (kk + 2 * BLOCK_K < K)[None, :], other=0.0)
        else:
            w_next = tl.load(w_rows + (kk + BLOCK_K)[None, :], mask=mask_n[:, None] & (kk + BLOCK_K < K)[None, :],
                             other=0.0)
        if PIPE:
            x_cur, s_cur, nw_cur = x_next, s_next, nw_next
            x_next, s_next, nw_next = _input_load(x_rows, r_rows, nw_ptr, kk + BLOCK_K,
                                                  mask_m[:, None] & (kk + BLOCK_K < K)[None, :], K, PROLOGUE, HAS_RES)
            if PROLOGUE == 1:  # normalised at the end: products of (x + residual) * norm weight, in float32
                xsum = x_cur
                if HAS_RES:
                    xsum = (x_cur.to(tl.float32) + s_cur.to(tl.float32)).to(x_cur.dtype)
                xs32 = xsum.to(tl.float32)
                sq3 += xs32 * xs32
                xin = xs32 * nw_cur.to(tl.float32)[None, :]
            else:
                xin, xsum = _input_make(x_cur, s_cur, nw_cur, rstd, PROLOGUE, HAS_RES)
        else:
            xin, xsum = _input_tile(x_rows, r_rows, nw_ptr, kk, mask_m[:, None] & mask_k[None, :], rstd, K,
                                    PROLOGUE, HAS_RES)
        if PROLOGUE == 1 and HAS_RES:
            if pid == 0:  # the new residual stream, written once
                tl.store(r_out_ptr + offs_m[:, None] * stride_ro + kk[None, :], xsum,
                         mask=mask_m[:, None] & mask_k[None, :])
        if PIPE:
            acc3 += xin.to(tl.float32)[:, None, :] * w.to(tl.float32)[None, :, :]
        else:
            acc += tl.sum(xin.to(tl.float32)[:, None, :] * w.to(tl.float32)[None, :, :], axis=2)
    if PIPE:
        acc = tl.sum(acc3, axis=2)
        if PROLOGUE == 1:
            acc = acc * (1.0 / tl.sqrt(tl.sum(sq3, axis=1) / K + eps))[:, None]
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    tl.store(out_ptr + offs_m[:, None] * stride_om + offs_n[None, :], acc.to(out_ptr.dtype.element_ty),
             mask=mask_m[:, None] & mask_n[None, :])


def _stat_k(m: int, k: int, config: GemvConfig, prologue: int) -> int:
    """Columns per tile of the RMSNorm statistic: the whole row up to 8,192 values per program (fewer for
    more rows), so that a row of a few thousand columns is one load; the K tile without a norm."""
    if prologue != 1 or config.pipelined:  # a pipelined launch sums the statistic in its main loop
        return config.block_k
    return max(config.block_k, min(next_power_of_2(k), 8192 // next_power_of_2(m)))


def _launch(x2, weight, bias, config, prologue=0, residual=None, norm_weight=None, eps=0.0, res_out=None):
    m, n = x2.shape[0], weight.shape[0]
    k = x2.shape[1] // 2 if prologue == 2 else x2.shape[1]
    if m > MAX_ROWS:
        raise ValueError(f"gemv serves at most {MAX_ROWS} rows, got {m}")
    assert weight.shape[1] == k and weight.stride(1) == 1 and x2.stride(1) == 1
    out = torch.empty(m, n, dtype=x2.dtype, device=x2.device)
    r = residual if residual is not None else x2
    if m:
        _gemv_kernel[(cdiv(n, config.block_n),)](
            x2, weight, bias if bias is not None else weight, out, r,
            norm_weight if norm_weight is not None else weight, res_out if res_out is not None else out,
            m, n, k, x2.stride(0), r.stride(0), weight.stride(0), out.stride(0),
            res_out.stride(0) if res_out is not None else 0, eps, HAS_BIAS=bias is not None,
            PROLOGUE=prologue, HAS_RES=residual is not None, BLOCK_M=next_power_of_2(m),
            BLOCK_N=config.block_n, BLOCK_K=config.block_k, STAT_K=_stat_k(m, k, config, prologue),
            PIPE=config.pipelined, AHEAD=config.ahead, num_warps=config.num_warps,
            **launch_kwargs(x2.device))
    return out


def as_rows(x: torch.Tensor) -> torch.Tensor:
    """`x` with its leading dimensions flattened, last dimension contiguous (copied only where it is not)."""
    x2 = x.reshape(-1, x.shape[-1])
    return x2 if x2.stride(-1) == 1 else x2.contiguous()


def gemv(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
         config: GemvConfig = GemvConfig()) -> torch.Tensor:
    """`x @ weight.T + bias` for `x` of at most `MAX_ROWS` rows (leading dimensions flattened)."""
    return _launch(as_rows(x), weight, bias, config).view(*x.shape[:-1], weight.shape[0])


def silu_mul_gemv(gate_up: torch.Tensor, weight: torch.Tensor, config: GemvConfig = GemvConfig()) -> torch.Tensor:
    """`(silu(gate) * up) @ weight.T` for `gate_up = [gate | up]`, without materialising the product."""
    return _launch(as_rows(gate_up), weight, None, config, prologue=2).view(*gate_up.shape[:-1], weight.shape[0])


def rmsnorm_gemv(x: torch.Tensor, residual: Optional[torch.Tensor], norm_weight: torch.Tensor, eps: float,
                 weight: torch.Tensor, bias: Optional[torch.Tensor] = None, config: GemvConfig = GemvConfig(),
                 residual_out: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """`rmsnorm(x + residual) @ weight.T + bias` in one launch; also returns the new residual `x + residual`
    (None without a residual), as `tierlm.kernels.fused.rmsnorm` would, written into `residual_out` when
    given (contiguous, `x`'s shape)."""
    x2 = as_rows(x)
    r2 = as_rows(residual) if residual is not None else None
    res_out = None
    if residual is not None:
        res_out = residual_out.view(x2.shape) if residual_out is not None else torch.empty_like(x2)
    out = _launch(x2, weight, bias, config, 1, r2, norm_weight, eps, res_out)
    return out.view(*x.shape[:-1], weight.shape[0]), (res_out.view(x.shape) if res_out is not None else None)
