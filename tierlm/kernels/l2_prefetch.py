"""Hints that warm the GPU's L2 cache with lines a kernel will read soon, issued before its PDL wait.

A PDL-launched kernel (`tierlm.kernels.pdl`) starts while its predecessor drains but may not read anything the
chain writes until `gdc_wait`. A prefetch is not a read into the program: it asks the L2 cache to fetch a
128-byte line and returns nothing, and the L2 is where all of the device's writes land, so a line fetched
early and written afterwards by the predecessor is simply the written line when the kernel loads it. That
lets a kernel start its first HBM round trips (its first KV tile, its first weight tile) during the wait,
whatever wrote them, with no effect on results.

Only compiled, PDL-launched kernels issue it (the interpreter has no inline assembly): callers size it with
`l2_prefetch_lines`, which gives no lines under the interpreter or without PDL.
"""
from __future__ import annotations

import os
from types import MappingProxyType

import triton
import triton.language as tl

from tierlm.kernels.launch import cdiv, next_power_of_2
from tierlm.utils.triton_mode import interpreted

LINE_BYTES = 128  # one L2 line; a prefetch fetches the line holding its address
ENV = "TIERLM_L2_PREFETCH"


@triton.jit
def prefetch_l2(ptrs):
    """Ask L2 to fetch the line of every pointer of `ptrs` (any shape; one instruction per element, so pass
    one pointer per line). Pointers must be valid addresses: masked lanes should point at a real one."""
    tl.inline_asm_elementwise("prefetch.global.L2 [$1];\n\tmov.u32 $0, 0;", "=r,l", [ptrs], dtype=tl.int32,
                              is_pure=False, pack=1)


MODES = MappingProxyType({"0": (), "attention": ("attention",), "1": ("attention", "gemm")})


def l2_prefetch_lines(pdl: bool, kind: str, row_elems: int, itemsize: int) -> tuple[int, int]:
    """(lines per row, elements per line) a kernel of `kind` ("attention": its first KV tile's rows; "gemm": its
    first weight tile's rows) prefetches before its PDL wait, for rows of `row_elems` elements of `itemsize`
    bytes; (0, 1) for none, and always without PDL (`pdl`: whether this launch uses it; no wait to hide).
    `TIERLM_L2_PREFETCH`: 0 (none), attention (only), 1 (both; the default). A GEMM that prefetched its whole K
    slice instead of one tile lost on the offline workload (docs/benchmarks.md), so one tile it is."""
    mode = MODES.get(os.environ.get(ENV, "1"), MODES["1"])
    if kind not in mode or not pdl or interpreted():
        return 0, 1
    return lines_per_row(row_elems, itemsize)


def lines_per_row(row_elems: int, itemsize: int) -> tuple[int, int]:
    """(lines, elements per line) that cover a row of `row_elems` elements of `itemsize` bytes, one prefetch
    per line; the count is a power of two (a Triton range), so a kernel clamps offsets past the row's end."""
    per_line = max(1, LINE_BYTES // itemsize)
    return next_power_of_2(cdiv(row_elems, per_line)), per_line
