"""The whole SwiGLU feed-forward of a decode step of 1-4 rows in one persistent launch:
`down(silu(gate) * up)` of `RMSNorm(x + residual)`.

At batch 1 the feed-forward is two weight reads (gate/up, then down) with a norm before and a SiLU·mul between,
and as four kernels each boundary costs HBM time: the launch, the first round trips and the last programs'
tail, during which nothing streams. Here one program per slot of the device (`programs`, all resident at
once) first streams gate/up tiles (gate rows `j` and up rows `j` together, so SiLU·mul is the tile's epilogue)
into a scratch vector `h`, meets the others at a grid barrier, and then streams the down projection's tiles;
each program issues its first down tile before the barrier, so the weight read runs on across it.

Rounding follows the unfused layers exactly where they round: the residual sum, the normalised input, the norm
weight's product, gate and up, SiLU and its product are each rounded to the dtype, and each output is one
float32 accumulation cast once (the summation order differs from cuBLAS's, so results match it to the dtype's
rounding). No atomics touch the sums: the result does not depend on timing.

The barrier needs every program resident together: `programs` is bounded by what the compiled kernel's
registers and shared memory let an SM hold (`resident_programs`), and the kernel lets its successor start (PDL)
only after the barrier, so a successor's programs never hold the slots the barrier waits for. Under Triton's
interpreter (one program at a time) the two halves run as two launches instead.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

from tierlm.kernels.pdl import launch_kwargs
from tierlm.utils.triton_mode import interpreted

MAX_ROWS = 4  # the rows one launch serves (padded to a power of two in registers)


@dataclass(frozen=True)
class MlpConfig:
    """Launch parameters: weight rows per tile and K tile of each half, warps, and programs per SM (capped by
    what the compiled kernel lets an SM hold)."""

    block_n1: int = 4
    block_k1: int = 512
    block_n2: int = 4
    block_k2: int = 512
    num_warps: int = 4
    per_sm: int = 2
    ahead: int = 2  # weight tiles in flight beyond the one being summed (1-3)
    lanes: bool = True  # products summed per lane, reduced at each tile's end (else reduced every K step)

    def __post_init__(self) -> None:
        if self.ahead not in (1, 2, 3):
            raise ValueError(f"mlp_decode launch: ahead must be 1, 2 or 3, got {self.ahead}")

    def label(self) -> str:
        return (f"gu n{self.block_n1} k{self.block_k1} / down n{self.block_n2} k{self.block_k2} "
                f"w{self.num_warps} x{self.per_sm} a{self.ahead}" + ("" if self.lanes else " r"))


@triton.jit
def _grid_barrier(bar_ptr, programs):
    """Wait until all `programs` programs arrive. `bar_ptr[0]` counts arrivals and is re-zeroed by the last
    one, which then advances the generation `bar_ptr[1]` the others wait on (so replays need no reset). The
    thread barriers make every thread's earlier writes part of the release and order its later reads after
    the acquire."""
    tl.debug_barrier()
    gen = tl.atomic_add(bar_ptr + 1, 0, sem="acquire", scope="gpu")
    if tl.atomic_add(bar_ptr, 1, sem="acq_rel", scope="gpu") == programs - 1:
        tl.atomic_xchg(bar_ptr, 0, sem="relaxed", scope="gpu")
        tl.atomic_add(bar_ptr + 1, 1, sem="release", scope="gpu")
    else:
        while tl.atomic_add(bar_ptr + 1, 0, sem="acquire", scope="gpu") == gen:
            pass
    tl.debug_barrier()


@triton.jit
def _tile_at(it, pid, programs, KT, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """Iteration `it` of a program's flattened (tile, K step) loop: (first output row, first K column)."""
    return (pid + (it // KT) * programs) * BLOCK_N, (it % KT) * BLOCK_K


@triton.jit
def _load_w(w_ptr, stride_w, it, total, pid, programs, KT, N, K, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """The weight tile of iteration `it` (zeros past the program's last, `total`); past L1, which keeps the
    inputs every tile reads again."""
    n0, k0 = _tile_at(it, pid, programs, KT, BLOCK_N, BLOCK_K)
    offs_n = n0 + tl.arange(0, BLOCK_N)
    offs_k = k0 + tl.arange(0, BLOCK_K)
    rows = tl.where(it < total, N, 0)
    return tl.load(w_ptr + offs_n.to(tl.int64)[:, None] * stride_w + offs_k[None, :],
                   mask=(offs_n < rows)[:, None] & (offs_k < K)[None, :], other=0.0,
                   cache_modifier=".cg")


@triton.jit
def _load_gu(w_ptr, stride_w, it, total, pid, programs, KT, N, K, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """Gate rows and the matching up rows (`N` further down) of iteration `it`."""
    return (_load_w(w_ptr, stride_w, it, total, pid, programs, KT, N, K, BLOCK_N, BLOCK_K),
            _load_w(w_ptr + N.to(tl.int64) * stride_w, stride_w, it, total, pid, programs, KT, N, K, BLOCK_N,
                    BLOCK_K))


@triton.jit
def _load_x(x_ptr, r_ptr, nw_ptr, stride_x, stride_r, offs_m, mask_m, kk, H, HAS_RES: tl.constexpr):
    """The raw parts of the normalised input at columns `kk`: x, the residual (x without one), the norm weight."""
    mask = mask_m[:, None] & (kk < H)[None, :]
    x = tl.load(x_ptr + offs_m[:, None] * stride_x + kk[None, :], mask=mask, other=0.0)
    r = x
    if HAS_RES:
        r = tl.load(r_ptr + offs_m[:, None] * stride_r + kk[None, :], mask=mask, other=0.0)
    return x, r, tl.load(nw_ptr + kk, mask=kk < H, other=0.0)


@triton.jit
def _norm_input(x, r, nw, rstd, HAS_RES: tl.constexpr):
    """RMSNorm(x + residual) * weight, rounded as `_rmsnorm_kernel` rounds."""
    if HAS_RES:
        x = (x.to(tl.float32) + r.to(tl.float32)).to(x.dtype)
    y = (x.to(tl.float32) * rstd[:, None]).to(x.dtype)
    return (nw.to(tl.float32)[None, :] * y.to(tl.float32)).to(x.dtype)


@triton.jit
def _acc_zeros(BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, LANES: tl.constexpr):
    """Float32 sums of a tile's products: per lane over its K steps, reduced once at the end (`LANES`), or
    reduced every step (fewer registers)."""
    if not LANES:
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    elif BLOCK_M == 1:
        acc = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
    else:
        acc = tl.zeros([BLOCK_M, BLOCK_N, BLOCK_K], dtype=tl.float32)
    return acc


@triton.jit
def _acc_add(acc, xin, w, BLOCK_M: tl.constexpr, LANES: tl.constexpr):
    """`acc` plus the products of input rows `xin` [M, K] and weight rows `w` [N, K]."""
    if not LANES:
        acc = acc + tl.sum(xin.to(tl.float32)[:, None, :] * w.to(tl.float32)[None, :, :], axis=2)
    elif BLOCK_M == 1:
        acc = acc + tl.sum(xin.to(tl.float32), axis=0)[None, :] * w.to(tl.float32)
    else:
        acc = acc + xin.to(tl.float32)[:, None, :] * w.to(tl.float32)[None, :, :]
    return acc


@triton.jit
def _acc_sum(acc, BLOCK_M: tl.constexpr, LANES: tl.constexpr):
    """The tile's outputs [M, N] from its sums."""
    if not LANES:
        out = acc
    elif BLOCK_M == 1:
        out = tl.sum(acc, axis=1)[None, :]
    else:
        out = tl.sum(acc, axis=2)
    return out


@triton.jit
def _mlp_kernel(x_ptr, r_ptr, nw_ptr, wgu_ptr, wd_ptr, h_ptr, out_ptr, r_out_ptr, bar_ptr, M, H, I,
                stride_x, stride_r, stride_wgu, stride_wd, stride_h, stride_o, stride_ro, eps, programs,
                HAS_RES: tl.constexpr, HALVES: tl.constexpr, BLOCK_M: tl.constexpr, BN1: tl.constexpr,
                BK1: tl.constexpr, BN2: tl.constexpr, BK2: tl.constexpr, AHEAD: tl.constexpr, LANES: tl.constexpr,
                STAT_K: tl.constexpr, PDL: tl.constexpr):
    # HALVES: 3 both halves with the grid barrier between them; 1 or 2 one half alone (the interpreter's way).
    # Each half keeps AHEAD weight tiles in flight beyond the one being summed, and its input one K step ahead.
    pid = tl.program_id(0)
    offs_m = tl.arange(0, BLOCK_M)
    mask_m = offs_m < M
    KT1 = tl.cdiv(H, BK1)
    KT2 = tl.cdiv(I, BK2)
    total1 = tl.cdiv(tl.maximum(tl.cdiv(I, BN1) - pid, 0), programs) * KT1
    total2 = tl.cdiv(tl.maximum(tl.cdiv(H, BN2) - pid, 0), programs) * KT2
    if HALVES & 1:  # weights first: they never depend on the kernel before (`tierlm.kernels.pdl`)
        g1, u1 = _load_gu(wgu_ptr, stride_wgu, 0, total1, pid, programs, KT1, I, H, BN1, BK1)
        g2, u2 = g1, u1
        g3, u3 = g1, u1
        if AHEAD >= 2:
            g2, u2 = _load_gu(wgu_ptr, stride_wgu, 1, total1, pid, programs, KT1, I, H, BN1, BK1)
        if AHEAD >= 3:
            g3, u3 = _load_gu(wgu_ptr, stride_wgu, 2, total1, pid, programs, KT1, I, H, BN1, BK1)
    if PDL:
        gdc_wait()
    if HALVES & 1:
        sq = tl.zeros([BLOCK_M], dtype=tl.float32)
        for s0 in range(0, H, STAT_K):
            kk = s0 + tl.arange(0, STAT_K)
            mask = mask_m[:, None] & (kk < H)[None, :]
            x = tl.load(x_ptr + offs_m[:, None] * stride_x + kk[None, :], mask=mask, other=0.0)
            if HAS_RES:
                x = (x.to(tl.float32) + tl.load(r_ptr + offs_m[:, None] * stride_r + kk[None, :], mask=mask,
                                                other=0.0).to(tl.float32)).to(x.dtype)
                if pid == 0:  # the new residual stream, written once
                    tl.store(r_out_ptr + offs_m[:, None] * stride_ro + kk[None, :], x, mask=mask)
            x32 = x.to(tl.float32)
            sq += tl.sum(x32 * x32, axis=1)
        rstd = 1.0 / tl.sqrt(sq / H + eps)
        acc_g = _acc_zeros(BLOCK_M, BN1, BK1, LANES)
        acc_u = _acc_zeros(BLOCK_M, BN1, BK1, LANES)
        xn, rn, nwn = _load_x(x_ptr, r_ptr, nw_ptr, stride_x, stride_r, offs_m, mask_m, tl.arange(0, BK1), H,
                              HAS_RES)
        for it in range(0, total1):
            n0, k0 = _tile_at(it, pid, programs, KT1, BN1, BK1)
            g, u = g1, u1
            if AHEAD == 1:
                g1, u1 = _load_gu(wgu_ptr, stride_wgu, it + 1, total1, pid, programs, KT1, I, H, BN1, BK1)
            elif AHEAD == 2:
                g1, u1 = g2, u2
                g2, u2 = _load_gu(wgu_ptr, stride_wgu, it + 2, total1, pid, programs, KT1, I, H, BN1, BK1)
            else:
                g1, u1 = g2, u2
                g2, u2 = g3, u3
                g3, u3 = _load_gu(wgu_ptr, stride_wgu, it + 3, total1, pid, programs, KT1, I, H, BN1, BK1)
            xc, rc, nwc = xn, rn, nwn
            xn, rn, nwn = _load_x(x_ptr, r_ptr, nw_ptr, stride_x, stride_r, offs_m, mask_m,
                                  ((it + 1) % KT1) * BK1 + tl.arange(0, BK1), H, HAS_RES)
            xin = _norm_input(xc, rc, nwc, rstd, HAS_RES)
            acc_g = _acc_add(acc_g, xin, g, BLOCK_M, LANES)
            acc_u = _acc_add(acc_u, xin, u, BLOCK_M, LANES)
            if it % KT1 == KT1 - 1:  # the tile's last K step: SiLU·mul rounded as `_silu_mul_kernel` rounds
                dtype = xin.dtype
                gs = _acc_sum(acc_g, BLOCK_M, LANES).to(dtype).to(tl.float32)
                us = _acc_sum(acc_u, BLOCK_M, LANES).to(dtype).to(tl.float32)
                act = (gs / (1.0 + tl.exp(-gs))).to(dtype).to(tl.float32)
                offs_n = n0 + tl.arange(0, BN1)
                tl.store(h_ptr + offs_m[:, None] * stride_h + offs_n[None, :], (act * us).to(dtype),
                         mask=mask_m[:, None] & (offs_n < I)[None, :])
                acc_g = _acc_zeros(BLOCK_M, BN1, BK1, LANES)
                acc_u = _acc_zeros(BLOCK_M, BN1, BK1, LANES)
    # the down projection's first tiles: before the barrier, so that they stream while it waits
    d1 = _load_w(wd_ptr, stride_wd, 0, total2, pid, programs, KT2, H, I, BN2, BK2)
    d2 = d1
    d3 = d1
    if AHEAD >= 2:
        d2 = _load_w(wd_ptr, stride_wd, 1, total2, pid, programs, KT2, H, I, BN2, BK2)
    if AHEAD >= 3:
        d3 = _load_w(wd_ptr, stride_wd, 2, total2, pid, programs, KT2, H, I, BN2, BK2)
    if HALVES == 3:
        _grid_barrier(bar_ptr, programs)
    if PDL:  # only now: a successor's programs must not take the slots the barrier waits for
        gdc_launch_dependents()
    if HALVES & 2:
        acc = _acc_zeros(BLOCK_M, BN2, BK2, LANES)
        kk = tl.arange(0, BK2)
        hn = tl.load(h_ptr + offs_m[:, None] * stride_h + kk[None, :], mask=mask_m[:, None] & (kk < I)[None, :],
                     other=0.0, cache_modifier=".cg")  # written by other programs: past L1
        for it in range(0, total2):
            n0, k0 = _tile_at(it, pid, programs, KT2, BN2, BK2)
            d = d1
            if AHEAD == 1:
                d1 = _load_w(wd_ptr, stride_wd, it + 1, total2, pid, programs, KT2, H, I, BN2, BK2)
            elif AHEAD == 2:
                d1 = d2
                d2 = _load_w(wd_ptr, stride_wd, it + 2, total2, pid, programs, KT2, H, I, BN2, BK2)
            else:
                d1 = d2
                d2 = d3
                d3 = _load_w(wd_ptr, stride_wd, it + 3, total2, pid, programs, KT2, H, I, BN2, BK2)
            hv = hn
            kk = ((it + 1) % KT2) * BK2 + tl.arange(0, BK2)
            hn = tl.load(h_ptr + offs_m[:, None] * stride_h + kk[None, :], mask=mask_m[:, None] & (kk < I)[None, :],
                         other=0.0, cache_modifier=".cg")
            acc = _acc_add(acc, hv, d, BLOCK_M, LANES)
            if it % KT2 == KT2 - 1:
                offs_n = n0 + tl.arange(0, BN2)
                tl.store(out_ptr + offs_m[:, None] * stride_o + offs_n[None, :],
                         _acc_sum(acc, BLOCK_M, LANES).to(out_ptr.dtype.element_ty),
                         mask=mask_m[:, None] & (offs_n < H)[None, :])
                acc = _acc_zeros(BLOCK_M, BN2, BK2, LANES)


def new_barrier(device: torch.device) -> torch.Tensor:
    """Grid-barrier words for `mlp_decode` (arrivals, generation), zeroed; made outside any graph capture and
    kept: the barrier leaves them ready for the next launch. Launches sharing them must not overlap (one
    stream)."""
    return torch.zeros(2, dtype=torch.int32, device=device)


def _args(x, residual, norm_weight, eps, gate_up, down, out, h, res_out, barrier, config):
    m, hidden = x.shape
    inter = down.shape[1]
    r = residual if residual is not None else x
    ro = res_out if res_out is not None else out
    args = (x, r, norm_weight, gate_up, down, h, out, ro, barrier, m, hidden, inter, x.stride(0), r.stride(0),
            gate_up.stride(0), down.stride(0), h.stride(0), out.stride(0), ro.stride(0), eps)
    meta = dict(HAS_RES=residual is not None, BLOCK_M=triton.next_power_of_2(m), BN1=config.block_n1,
                BK1=config.block_k1, BN2=config.block_n2, BK2=config.block_k2, AHEAD=config.ahead, LANES=config.lanes,
                STAT_K=min(triton.next_power_of_2(hidden), 1024 // triton.next_power_of_2(m)),
                num_warps=config.num_warps)
    return args, meta


def resident_programs(config: MlpConfig, rows: int, hidden: int, inter: int, dtype: torch.dtype,
                      device: torch.device) -> int:
    """How many programs a launch of `config` runs on `device`: `config.per_sm` per SM, at most what the
    compiled kernel lets every SM hold at once (registers, shared memory, threads), which the grid barrier
    needs. Builds the kernel (outside any graph capture)."""
    def t(*shape):
        return torch.empty(*shape, dtype=dtype, device=device)

    x, gate_up, down = t(rows, hidden), t(2 * inter, hidden), t(hidden, inter)
    args, meta = _args(x, x, t(hidden), 1e-6, gate_up, down, t(rows, hidden), t(rows, inter), t(rows, hidden),
                       new_barrier(device), config)
    kernel = _mlp_kernel.warmup(*args, 1, HALVES=3, grid=(1,), **meta, **launch_kwargs(device))
    if hasattr(kernel, "_init_handles"):  # register counts are read when the module is loaded
        kernel._init_handles()
    props = torch.cuda.get_device_properties(device)
    regs_per_warp = -(-max(kernel.n_regs, 1) * 32 // 256) * 256
    by_regs = getattr(props, "regs_per_multiprocessor", 65536) // (regs_per_warp * config.num_warps)
    by_threads = props.max_threads_per_multi_processor // (32 * config.num_warps)
    shared = kernel.metadata.shared
    by_smem = getattr(props, "shared_memory_per_multiprocessor", 228 << 10) // shared if shared else by_threads
    per_sm = min(config.per_sm, by_regs, by_threads, by_smem)
    if per_sm < 1:
        raise RuntimeError(f"mlp_decode {config.label()}: an SM cannot hold one program")
    return per_sm * props.multi_processor_count


def mlp_decode(x: torch.Tensor, residual: Optional[torch.Tensor], norm_weight: torch.Tensor, eps: float,
               gate_up: torch.Tensor, down: torch.Tensor, config: MlpConfig, programs: int,
               barrier: Optional[torch.Tensor] = None, residual_out: Optional[torch.Tensor] = None,
               apart: bool = False) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """`down(silu(gate) * up)` of `RMSNorm(x + residual) * norm_weight` for `x` of at most `MAX_ROWS` rows
    `[M, H]`, with `gate_up = [gate; up]` `[2I, H]` and `down` `[H, I]`, over `programs` programs (from
    `resident_programs`; on a GPU `barrier` from `new_barrier`). Returns (output `[M, H]`, the new residual
    `x + residual` or None without one; written into `residual_out` when given). `apart`: the two halves as
    two launches without the barrier (how the interpreter runs them; a timing reference on a GPU)."""
    m, hidden = x.shape
    inter = down.shape[1]
    if m > MAX_ROWS:
        raise ValueError(f"mlp_decode serves at most {MAX_ROWS} rows, got {m}")
    assert gate_up.shape == (2 * inter, hidden) and down.shape == (hidden, inter)
    assert x.stride(1) == 1 and gate_up.stride(1) == 1 and down.stride(1) == 1
    out = torch.empty(m, hidden, dtype=x.dtype, device=x.device)
    res_out = None
    if residual is not None:
        res_out = residual_out if residual_out is not None else torch.empty_like(x)
    if m == 0:
        return out, res_out
    h = torch.empty(m, inter, dtype=x.dtype, device=x.device)
    if apart or interpreted() or not x.is_cuda:  # the interpreter runs one program at a time
        args, meta = _args(x, residual, norm_weight, eps, gate_up, down, out, h, res_out, x, config)
        pdl = launch_kwargs(x.device) if x.is_cuda and not interpreted() else {"PDL": False}
        for halves in (1, 2):
            _mlp_kernel[(programs,)](*args, programs, HALVES=halves, **meta, **pdl)
        return out, res_out
    args, meta = _args(x, residual, norm_weight, eps, gate_up, down, out, h, res_out, barrier, config)
    _mlp_kernel[(programs,)](*args, programs, HALVES=3, **meta, **launch_kwargs(x.device))
    return out, res_out
