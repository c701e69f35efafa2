"""Fused mixture-of-experts feed-forward: (token, expert) pairs sorted by expert, two grouped GEMMs.

`moe_align` groups the pairs by expert and pads each expert's segment to a multiple of BLOCK_M, entirely with
device-side torch ops (no host read), so the whole path can be captured in a CUDA graph. The grids are sized
for the worst case; row blocks past the real padded total exit at once. Kernel 1 multiplies the gathered
token rows by their expert's gate and up rows and writes `silu(gate) * up`; kernel 2 multiplies that by the
expert's down projection and the routing weight, one output row per pair; the top-k rows of a token are then
summed (`moe_combine`, with the shared experts' output when given). Intermediates are rounded to the input
dtype where the torch reference rounds them. A launch with `block_m == PAIRS` runs `tierlm.kernels.moe_pairs`
instead: one program per (pair, column block), no sorting, for batches of a few tokens.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch
import triton
import triton.language as tl

from tierlm.kernels.launch import cdiv
from tierlm.kernels.moe_combine import combine
from tierlm.kernels.moe_pairs import moe_by_pairs

PAIRS = 1  # block_m of the pair-at-a-time launches (no tensor-core tile has one row)


@dataclasses.dataclass(frozen=True)
class MoEConfig:
    """Launch parameters of both grouped GEMMs (the tuned unit of the autotune store). `block_m == PAIRS` names
    the pair-at-a-time kernels (`moe_pairs`), which use `block_n`, `block_k` and `num_warps` only."""

    block_m: int = 16
    block_n: int = 64
    block_k: int = 64
    group_m: int = 8
    num_warps: int = 4
    num_stages: int = 2


@dataclasses.dataclass(frozen=True)
class MoEAlignment:
    """Pairs grouped by expert, padded to whole row blocks. `sorted_pairs[r]` is the pair (token * top_k +
    slot) of padded row r, or `num_pairs` on padding; `block_expert[b]` the expert of row block b; `total` a
    one-element device tensor holding the padded row count (rows at and past it are unused)."""

    sorted_pairs: torch.Tensor
    block_expert: torch.Tensor
    total: torch.Tensor
    max_rows: int


def max_padded_rows(num_pairs: int, num_experts: int, block_m: int) -> int:
    """Upper bound of the padded row count: each expert that gets a pair pads at most block_m - 1 rows."""
    return num_pairs + min(num_experts, num_pairs) * (block_m - 1)


def moe_align(ids: torch.Tensor, num_experts: int, block_m: int) -> MoEAlignment:
    """Group the (token, slot) pairs of `ids` `[tokens, top_k]` by expert, each segment padded to block_m."""
    flat = ids.reshape(-1).to(torch.int64)
    num_pairs = flat.numel()
    dev = flat.device
    counts = torch.zeros(num_experts, dtype=torch.int64, device=dev)
    counts.scatter_add_(0, flat, torch.ones_like(flat))  # bincount without its host-side max()
    padded = (counts + block_m - 1) // block_m * block_m
    padded_end = torch.cumsum(padded, 0)
    offset = (padded_end - padded) - (torch.cumsum(counts, 0) - counts)  # padded start - unpadded start
    experts, order = torch.sort(flat, stable=True)
    dest = torch.arange(num_pairs, device=dev) + offset[experts]
    max_rows = max_padded_rows(num_pairs, num_experts, block_m)
    sorted_pairs = torch.full((max_rows,), num_pairs, dtype=torch.int32, device=dev)
    sorted_pairs.scatter_(0, dest, order.to(torch.int32))
    block_start = torch.arange(0, max_rows, block_m, device=dev)
    block_expert = torch.searchsorted(padded_end, block_start, right=True).to(torch.int32)
    return MoEAlignment(sorted_pairs, block_expert, padded_end[-1:].to(torch.int32), max_rows)


@triton.jit
def _block_coords(max_rows, n_cols, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    # grouped ordering: GROUP_M row blocks share each column sweep, so weight tiles are reused from L2
    pid = tl.program_id(0)
    num_m = tl.cdiv(max_rows, BLOCK_M)
    num_n = tl.cdiv(n_cols, BLOCK_N)
    per_group = GROUP_M * num_n
    first_m = (pid // per_group) * GROUP_M
    size_m = min(num_m - first_m, GROUP_M)
    return first_m + (pid % per_group) % size_m, (pid % per_group) // size_m


# the pair and row counts change with every batch: specializing on them (divisibility by 16) would compile
# each kernel again, on the step's thread, the first time a batch size of the other kind comes
_PER_BATCH = ("num_pairs", "max_rows")


@triton.jit(do_not_specialize=_PER_BATCH)
def _gate_up_kernel(x_ptr, w_ptr, h_ptr, pairs_ptr, block_expert_ptr, total_ptr, num_pairs, max_rows, hidden,
                    inter, stride_x, stride_we, stride_wn, stride_h, TOP_K: tl.constexpr, IEEE: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    pid_m, pid_n = _block_coords(max_rows, inter, BLOCK_M, BLOCK_N, GROUP_M)
    if pid_m * BLOCK_M >= tl.load(total_ptr):
        return
    expert = tl.load(block_expert_ptr + pid_m).to(tl.int64)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    pairs = tl.load(pairs_ptr + rows)
    valid = pairs < num_pairs
    tokens = (pairs // TOP_K).to(tl.int64)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < inter
    ks = tl.arange(0, BLOCK_K)
    a_ptrs = x_ptr + tokens[:, None] * stride_x + ks[None, :]
    g_ptrs = w_ptr + expert * stride_we + cols[None, :].to(tl.int64) * stride_wn + ks[:, None]
    u_ptrs = g_ptrs + inter * stride_wn  # up rows follow the gate rows
    acc_g = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc_u = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(tl.cdiv(hidden, BLOCK_K)):
        k_ok = ks < hidden - k * BLOCK_K
        a = tl.load(a_ptrs, mask=valid[:, None] & k_ok[None, :], other=0.0)
        g = tl.load(g_ptrs, mask=k_ok[:, None] & col_ok[None, :], other=0.0)
        u = tl.load(u_ptrs, mask=k_ok[:, None] & col_ok[None, :], other=0.0)
        if IEEE:
            acc_g += tl.dot(a, g, input_precision="ieee")
            acc_u += tl.dot(a, u, input_precision="ieee")
        else:
            acc_g += tl.dot(a, g)
            acc_u += tl.dot(a, u)
        a_ptrs += BLOCK_K
        g_ptrs += BLOCK_K
        u_ptrs += BLOCK_K
    dtype = h_ptr.dtype.element_ty
    gate = acc_g.to(dtype).to(tl.float32)
    act = (gate / (1.0 + tl.exp(-gate))).to(dtype).to(tl.float32)
    h = (act * acc_u.to(dtype).to(tl.float32)).to(dtype)
    h_ptrs = h_ptr + rows[:, None].to(tl.int64) * stride_h + cols[None, :]
    tl.store(h_ptrs, h, mask=valid[:, None] & col_ok[None, :])


@triton.jit(do_not_specialize=_PER_BATCH)
def _down_kernel(h_ptr, w_ptr, out_ptr, weights_ptr, pairs_ptr, block_expert_ptr, total_ptr, num_pairs, max_rows,
                 hidden, inter, stride_h, stride_we, stride_wn, stride_o, IEEE: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    pid_m, pid_n = _block_coords(max_rows, hidden, BLOCK_M, BLOCK_N, GROUP_M)
    if pid_m * BLOCK_M >= tl.load(total_ptr):
        return
    expert = tl.load(block_expert_ptr + pid_m).to(tl.int64)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    pairs = tl.load(pairs_ptr + rows)
    valid = pairs < num_pairs  # padding rows of h were never written
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < hidden
    ks = tl.arange(0, BLOCK_K)
    a_ptrs = h_ptr + rows[:, None].to(tl.int64) * stride_h + ks[None, :]
    b_ptrs = w_ptr + expert * stride_we + cols[None, :].to(tl.int64) * stride_wn + ks[:, None]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(tl.cdiv(inter, BLOCK_K)):
        k_ok = ks < inter - k * BLOCK_K
        a = tl.load(a_ptrs, mask=valid[:, None] & k_ok[None, :], other=0.0)
        b = tl.load(b_ptrs, mask=k_ok[:, None] & col_ok[None, :], other=0.0)
        if IEEE:
            acc += tl.dot(a, b, input_precision="ieee")
        else:
            acc += tl.dot(a, b)
        a_ptrs += BLOCK_K
        b_ptrs += BLOCK_K
    dtype = out_ptr.dtype.element_ty
    w = tl.load(weights_ptr + pairs, mask=valid, other=0.0).to(tl.float32)
    y = (acc.to(dtype).to(tl.float32) * w[:, None]).to(dtype)
    out_ptrs = out_ptr + pairs[:, None].to(tl.int64) * stride_o + cols[None, :]
    tl.store(out_ptrs, y, mask=valid[:, None] & col_ok[None, :])


def fused_moe(x: torch.Tensor, gate_up: torch.Tensor, down: torch.Tensor, weights: torch.Tensor,
              ids: torch.Tensor, config: MoEConfig = MoEConfig(), add: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Weighted sum of each token's top-k SwiGLU experts, like `tierlm.layers.moe.experts_sorted`, plus `add`
    `[tokens, hidden]` when given (the shared experts' output, added as `out + add` rounds).

    `x` `[tokens, hidden]`, `gate_up` `[experts, 2 * inter, hidden]` (gate rows, then up rows), `down`
    `[experts, hidden, inter]`, `weights`/`ids` `[tokens, top_k]`. Reads nothing on the host.
    """
    if x.shape[0] == 0:
        return torch.zeros_like(x)
    x, gate_up, down = x.contiguous(), gate_up.contiguous(), down.contiguous()
    flat_weights = weights.reshape(-1).contiguous()
    if config.block_m == PAIRS:
        per_pair = moe_by_pairs(x, gate_up, down, flat_weights, ids, config.block_n, config.block_k,
                                config.num_warps)
    else:
        per_pair = _grouped(x, gate_up, down, flat_weights, ids, config)
    return combine(per_pair, ids.shape[1], add)


def _grouped(x: torch.Tensor, gate_up: torch.Tensor, down: torch.Tensor, flat_weights: torch.Tensor,
             ids: torch.Tensor, cfg: MoEConfig) -> torch.Tensor:
    """Each pair's weighted expert output `[tokens * top_k, hidden]` by the two grouped GEMMs."""
    tokens, hidden = x.shape
    top_k = ids.shape[1]
    num_experts, inter = gate_up.shape[0], down.shape[2]
    al = moe_align(ids, num_experts, cfg.block_m)
    num_pairs = tokens * top_k
    ieee = x.dtype == torch.float32  # fp32 stays fp32 (no TF32) so it matches the reference
    h = torch.empty(al.max_rows, inter, dtype=x.dtype, device=x.device)
    blocks_m = cdiv(al.max_rows, cfg.block_m)
    launch = dict(BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, GROUP_M=cfg.group_m,
                  num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    _gate_up_kernel[(blocks_m * cdiv(inter, cfg.block_n),)](
        x, gate_up, h, al.sorted_pairs, al.block_expert, al.total, num_pairs, al.max_rows, hidden, inter,
        x.stride(0), gate_up.stride(0), gate_up.stride(1), h.stride(0), TOP_K=top_k, IEEE=ieee, **launch)
    per_pair = torch.empty(num_pairs, hidden, dtype=x.dtype, device=x.device)
    _down_kernel[(blocks_m * cdiv(hidden, cfg.block_n),)](
        h, down, per_pair, flat_weights, al.sorted_pairs, al.block_expert, al.total, num_pairs, al.max_rows,
        hidden, inter, h.stride(0), down.stride(0), down.stride(1), per_pair.stride(0), IEEE=ieee, **launch)
    return per_pair
