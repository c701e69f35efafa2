"""`y = x W^T (+ b)` for decode batches of 5-256 rows, on tensor cores: the decode-time linear layers between
the GEMV's few rows and prefill's thousands.

At these sizes a linear layer costs little more than its weight read (a few MB), so a step of a small model
is a chain of kernels each lasting a few microseconds, and what cuBLAS loses is the time around the read:
the launch, the first round trips to HBM and the last programs' tail, paid once per layer. This kernel:
- computes the transposed product (`y^T = W x^T`), so the weight rows fill the matrix unit's long side and
  the few batch rows its short one (the "swap AB" arrangement);
- is launched with programmatic dependent launch (`tierlm.kernels.pdl`), so it starts while the kernel
  before it finishes;
- optionally splits K over `split_k` programs per output tile; the last program of a tile to finish (a
  counter per tile) adds the partial sums in split order, so the result does not depend on which program
  finished first (deterministic, unlike atomic adds). The counters are reset by that program.

Rounding: one float32 accumulation per output, cast once, like cuBLAS (summation order differs, so the
results match it to the dtype's rounding). Callers use it only where a timing chose it
(`tierlm.kernels.skinny_gemm_tune`), for bf16 / fp16 weights.

`SkinnyConfig.tma` (off unless asked for; no tuner list holds it yet) has the Tensor Memory Accelerator bring
each weight tile into shared memory from a descriptor (bulk asynchronous copies that one thread issues) instead
of every thread loading its part: the same tiles and rounding, with fewer instructions and registers per
byte in flight. The weight must be 16-byte aligned (base and row stride).

No prologue is fused in (unlike the GEMV): the input is the matrix unit's shared-memory operand here, so an
input computed in registers (a norm, a SiLU·mul) has to be stored back to shared memory every K step, which
stalls the pipeline; timed on an H200 such launches lost to the prologue's own kernel plus this one at every
shape and batch tried (docs/benchmarks.md). Nor an epilogue: the SiLU·mul of a `[gate | up]` projection as this
kernel's epilogue (a gate and an up accumulator per program, 34a1c30) beat the projection and the SiLU·mul apart
in the tuner's timings at some batch sizes, yet the engine's decode steps ran slower with it (docs/benchmarks.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

from tierlm.kernels.arrival import last_to_arrive, rearm
from tierlm.kernels.gemv import as_rows
from tierlm.kernels.l2_prefetch import l2_prefetch_lines, prefetch_l2
from tierlm.kernels.launch import cdiv, next_power_of_2
from tierlm.kernels.pdl import launch_options, pdl_enabled

MIN_ROWS, MAX_ROWS = 5, 256  # the rows this kernel serves (fewer: `gemv`; more: cuBLAS)
_SMEM_BYTES = 200 << 10  # what the software pipeline's buffers may take of an SM's shared memory


@dataclass(frozen=True)
class SkinnyConfig:
    """Launch parameters: weight rows per program (the matrix unit's long side), K tile, K splits, warps and
    pipeline stages (fewer where the tiles of a large batch would not fit in shared memory)."""

    block_n: int = 64
    block_k: int = 128
    split_k: int = 1
    num_warps: int = 4
    num_stages: int = 4
    # Batch rows per program: 0 for the whole (power-of-two) batch; fewer where a large batch's input would be
    # read again by too many programs.
    block_m: int = 0
    tma: bool = False  # weight tiles by the Tensor Memory Accelerator (see the module docstring)

    def __post_init__(self) -> None:
        if self.block_n < 16 or self.block_k < 16 or self.split_k < 1 or (self.block_m and self.block_m < 16):
            raise ValueError(f"skinny gemm launch: block_n, block_k and block_m (if set) must be >= 16 and "
                             f"split_k >= 1, got {self}")

    def label(self) -> str:
        return (f"n{self.block_n} k{self.block_k} s{self.split_k} w{self.num_warps} st{self.num_stages}"
                + (f" m{self.block_m}" if self.block_m else "") + (" tma" if self.tma else ""))


@triton.jit(do_not_specialize=["M", "M_PAD"])  # the batch changes from step to step: one build per tile
def _skinny_kernel(x_ptr, w_ptr, b_ptr, out_ptr, part_ptr, count_ptr, M, M_PAD, N, K, K_SPLIT, stride_xm,
                   stride_wn, stride_om, HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                   BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr, PRECISION: tl.constexpr, PDL: tl.constexpr,
                   PREFETCH_LINES: tl.constexpr = 0, LINE: tl.constexpr = 64, TMA: tl.constexpr = False):
    # TMA: `w_ptr` is a tensor descriptor of the weight with [BLOCK_N, BLOCK_K] blocks; it zero-fills past N and
    # K, and K_SPLIT is a multiple of BLOCK_K, so no tile reaches into the next split's columns
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    pid_m = tl.program_id(2)
    if PDL:
        gdc_launch_dependents()
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    k_lo = pid_k * K_SPLIT
    k_hi = tl.minimum(k_lo + K_SPLIT, K)
    if not TMA:
        w_rows = w_ptr + offs_n.to(tl.int64)[:, None] * stride_wn
    if PREFETCH_LINES > 0:  # the slice's first weight lines into L2 during the wait (`kernels.l2_prefetch`)
        cols = tl.minimum(k_lo + tl.arange(0, PREFETCH_LINES) * LINE, k_hi - 1)
        prefetch_l2(w_ptr + tl.where(mask_n, offs_n, 0).to(tl.int64)[:, None] * stride_wn + cols[None, :])
    if PDL:
        gdc_wait()
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = offs_m < M
    offs_k = tl.arange(0, BLOCK_K)
    x_rows = x_ptr + offs_m[:, None] * stride_xm
    acc = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
    for k0 in range(k_lo, k_hi, BLOCK_K):
        kk = k0 + offs_k
        mask_k = kk < k_hi
        if TMA:
            w = w_ptr.load([pid_n * BLOCK_N, k0])
        else:
            w = tl.load(w_rows + kk[None, :], mask=mask_n[:, None] & mask_k[None, :], other=0.0)
        x = tl.load(x_rows + kk[None, :], mask=mask_m[:, None] & mask_k[None, :], other=0.0)
        acc = tl.dot(w, tl.trans(x), acc, input_precision=PRECISION)
    done = True
    if SPLIT_K > 1:  # partial sums to the workspace; the tile's last program to arrive adds them in order
        part = part_ptr + (offs_n[:, None] * M_PAD + offs_m[None, :])
        tile = N * M_PAD
        counter = count_ptr + pid_n * tl.num_programs(2) + pid_m
        tl.store(part + pid_k * tile, acc, mask=mask_n[:, None])
        done = last_to_arrive(counter, SPLIT_K)
        if done:
            acc = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
            for s in range(SPLIT_K):
                acc += tl.load(part + s * tile, mask=mask_n[:, None], other=0.0, cache_modifier=".cg")
            rearm(counter)
    if done:
        if HAS_BIAS:
            acc += tl.load(b_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[:, None]
        tl.store(out_ptr + offs_m[None, :] * stride_om + offs_n[:, None], acc.to(out_ptr.dtype.element_ty),
                 mask=mask_n[:, None] & mask_m[None, :])


def block_m(rows: int, config: SkinnyConfig = SkinnyConfig()) -> int:
    """The batch tile for `rows` rows: a power of two, at least 16 (the matrix unit's smallest side), at most
    the launch's `block_m` where set."""
    whole = max(16, next_power_of_2(rows))
    return min(whole, config.block_m) if config.block_m else whole


def _stages(config: SkinnyConfig, bm: int, itemsize: int) -> int:
    per_stage = (config.block_n + bm) * config.block_k * itemsize
    return max(2, min(config.num_stages, _SMEM_BYTES // per_stage))


def split_counters(n: int, config: SkinnyConfig, device: torch.device) -> Optional[torch.Tensor]:
    """The zeroed per-tile counters a split launch of an `n`-row weight needs (None without splits). The
    kernel leaves them zeroed, so one set serves every call on a stream, CUDA graphs included."""
    if config.split_k == 1:
        return None
    return torch.zeros(num_counters(n, config), dtype=torch.int32, device=device)


def num_counters(n: int, config: SkinnyConfig) -> int:
    """How many split counters a launch of `config` on an `n`-row weight may use (one per output tile)."""
    return cdiv(n, config.block_n) * (MAX_ROWS // config.block_m if config.block_m else 1)


def weight_descriptor(weight: torch.Tensor, config: SkinnyConfig):
    """The tensor descriptor a `tma` launch reads `weight` through, in `[block_n, block_k]` blocks."""
    from triton.tools.tensor_descriptor import TensorDescriptor

    size = weight.element_size()
    if weight.data_ptr() % 16 or (weight.stride(0) * size) % 16:
        raise ValueError(f"skinny_gemm: a tma launch needs a 16-byte aligned weight (base and row stride); this "
                         f"one has row stride {weight.stride(0) * size} bytes")
    return TensorDescriptor(weight, list(weight.shape), [weight.stride(0), 1], [config.block_n, config.block_k])


def _launch(x2: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], config: SkinnyConfig,
            counters: Optional[torch.Tensor]) -> torch.Tensor:
    m, n, k = x2.shape[0], weight.shape[0], x2.shape[1]
    if m > MAX_ROWS:
        raise ValueError(f"skinny_gemm serves at most {MAX_ROWS} rows, got {m}")
    if weight.shape[1] != k or weight.stride(1) != 1:
        raise ValueError(f"skinny_gemm: weight {tuple(weight.shape)} does not match input {tuple(x2.shape)}")
    if config.split_k > 1 and (counters is None or counters.numel() < num_counters(n, config)):
        raise ValueError("skinny_gemm: a split launch needs its counters (split_counters)")
    out = torch.empty(m, n, dtype=x2.dtype, device=x2.device)
    if m:
        bm = block_m(m, config)
        m_tiles, n_tiles = cdiv(m, bm), cdiv(n, config.block_n)
        k_split = cdiv(cdiv(k, config.split_k), config.block_k) * config.block_k
        splits = cdiv(k, k_split)
        part = torch.empty(splits, n, m_tiles * bm, dtype=torch.float32, device=x2.device) if splits > 1 else out
        pdl = pdl_enabled(x2.device)
        lines, line = l2_prefetch_lines(pdl, "gemm", min(k_split, config.block_k), weight.element_size())
        w_arg = weight
        if config.tma:
            lines, w_arg = 0, weight_descriptor(weight, config)
        _skinny_kernel[(n_tiles, splits, m_tiles)](
            x2, w_arg, bias if bias is not None else weight, out, part, counters if counters is not None else out,
            m, m_tiles * bm, n, k, k_split, x2.stride(0), weight.stride(0), out.stride(0), HAS_BIAS=bias is not None,
            BLOCK_M=bm, BLOCK_N=config.block_n, BLOCK_K=config.block_k, SPLIT_K=splits,
            PRECISION="ieee" if x2.dtype == torch.float32 else "tf32", PDL=pdl, PREFETCH_LINES=lines, LINE=line,
            TMA=config.tma, num_warps=config.num_warps,
            num_stages=_stages(config, bm, x2.element_size()), **launch_options(pdl))
    return out


def skinny_gemm(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                config: SkinnyConfig = SkinnyConfig(), counters: Optional[torch.Tensor] = None) -> torch.Tensor:
    """`x @ weight.T + bias` for `x` of `MIN_ROWS`-`MAX_ROWS` rows (leading dimensions flattened); a split
    launch needs `counters` from `split_counters` (not shared with a launch on another stream)."""
    return _launch(as_rows(x), weight, bias, config, counters).view(*x.shape[:-1], weight.shape[0])
