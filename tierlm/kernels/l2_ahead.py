"""Ask L2 for a weight ahead of the kernel that reads it, while the kernels before that one leave HBM idle.

At small decode batches a layer's linears are weight reads and everything between them (rotary, attention
over a short context, norms) reads almost nothing, so HBM sits idle for those microseconds. A weight that
fits in L2 (the O projection of an 8B model is 32 MiB, H100/H200 L2 is 50 MiB) can be streamed in during
that gap and then read from L2 by its GEMV. `l2_ahead(weight)` launches one small kernel whose programs each
issue bulk prefetches (`cp.async.bulk.prefetch.L2`, sm_90+) over a slice of the tensor and then exit: nothing
waits for the data, so the kernels after it run on while it arrives.

Under programmatic dependent launch (`tierlm.kernels.pdl`) the kernel lets its successor start at once and
waits for its predecessor before it exits, the contract every PDL kernel keeps; it writes nothing. It is a
hint: results never depend on it, only the time of the reader.
"""
from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

from tierlm.kernels.pdl import launch_kwargs, sm_major

ENV = "TIERLM_L2_AHEAD"  # "0": never (A/B timing, debugging)

_PLAIN = tl.constexpr("{ .reg .pred p; setp.ne.u32 p, $2, 0;\n\t"
          "@p cp.async.bulk.prefetch.L2.global [$1], $2;\n\tmov.u32 $0, 0; }")
# evict_last: the lines stay ahead of the streams that pass through L2 before their reader comes
_LAST = tl.constexpr("{ .reg .pred p; .reg .b64 pol; setp.ne.u32 p, $2, 0;\n\t"
         "createpolicy.fractional.L2::evict_last.b64 pol, 1.0;\n\t"
         "@p cp.async.bulk.prefetch.L2.global.L2::cache_hint [$1], $2, pol;\n\tmov.u32 $0, 0; }")


@triton.jit
def _l2_ahead_kernel(ptr, nbytes, CHUNK: tl.constexpr, PER_PROGRAM: tl.constexpr, LAST: tl.constexpr,
                     PDL: tl.constexpr):
    if PDL:
        gdc_launch_dependents()
    idx = tl.program_id(0) * PER_PROGRAM + tl.arange(0, PER_PROGRAM)
    start = idx.to(tl.int64) * CHUNK
    size = tl.minimum(tl.maximum(nbytes - start, 0), CHUNK).to(tl.int32)  # 0: past the end, not issued
    if LAST:
        tl.inline_asm_elementwise(_LAST, "=r,l,r", [ptr + start, size], dtype=tl.int32, is_pure=False, pack=1)
    else:
        tl.inline_asm_elementwise(_PLAIN, "=r,l,r", [ptr + start, size], dtype=tl.int32, is_pure=False, pack=1)
    if PDL:
        gdc_wait()


def can_l2_ahead(t: torch.Tensor) -> bool:
    """Whether `l2_ahead` acts on `t`: contiguous, on an NVIDIA GPU with bulk prefetch (sm_90+), its start and
    size multiples of 16 bytes (what the instruction takes)."""
    if not t.is_cuda or torch.version.hip is not None or not t.is_contiguous():
        return False
    nbytes = t.numel() * t.element_size()
    return t.data_ptr() % 16 == 0 and nbytes % 16 == 0 and nbytes > 0 and sm_major(t.device) >= 9


def worth_l2_ahead(t: torch.Tensor) -> bool:
    """Whether the engine streams `t` into L2 ahead of its reader: `can_l2_ahead`, not switched off by
    `TIERLM_L2_AHEAD=0`, and `t` at most three quarters of the device's L2 (the rest keeps what the kernels in
    between read, and lines of a larger tensor would evict each other before the reader comes)."""
    if os.environ.get(ENV, "1") == "0" or not can_l2_ahead(t):
        return False
    return t.numel() * t.element_size() <= 3 * _l2_bytes(t.device.index if t.device.index is not None
                                                         else torch.cuda.current_device()) // 4


@functools.lru_cache(maxsize=None)
def _l2_bytes(index: int) -> int:
    """A device's L2 size in bytes (a fixed fact, asked once)."""
    return torch.cuda.get_device_properties(index).L2_cache_size


def l2_ahead(t: torch.Tensor, chunk_kib: int = 64, per_program: int = 32, evict_last: bool = False) -> bool:
    """Launch the bulk L2 prefetch of all of `t` in chunks of `chunk_kib` KiB, `per_program` chunks per
    program; returns False (and launches nothing) where `can_l2_ahead` says no."""
    if not can_l2_ahead(t):
        return False
    nbytes = t.numel() * t.element_size()
    chunk = chunk_kib << 10
    grid = (triton.cdiv(triton.cdiv(nbytes, chunk), per_program),)
    _l2_ahead_kernel[grid](t.view(-1).view(torch.uint8), nbytes, CHUNK=chunk, PER_PROGRAM=per_program,
                           LAST=evict_last, num_warps=1, **launch_kwargs(t.device))
    return True
