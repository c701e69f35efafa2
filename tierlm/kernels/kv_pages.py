"""`TritonPageTransfer`: the page copies of `KVPageTransfer` as one Triton kernel, for machines where our
JIT CUDA kernels cannot build (no CUDA toolkit beside a pip-installed torch, a failed build).

Same contract as `tierlm.jit.kv_transfer.KVPageTransfer` (regions, page-first host buffer, `[2, n]` page
ids, layer ranges): asynchronous on the current stream, the GPU reading or writing the pinned host
buffer directly (it is mapped into the device's address space), or a staging buffer on the device. Without
it the tiers on CUDA would fall back to synchronous torch indexing, which serves slower than having no
host tier at all. The kernel is persistent: `max_blocks` programs (or a few per SM) walk the
(page, region) pairs, so a copy running beside the model can be held to a few SMs.
"""
from __future__ import annotations

import functools
import math
from typing import Optional, Sequence

import torch
import triton
import triton.language as tl

from tierlm.jit.kv_transfer import KVPageTransfer

BLOCK = 1024  # words each program moves per iteration
PROGRAMS_PER_SM = 4


@triton.jit(do_not_specialize=["n", "first", "count"])  # per-copy counts: never a compile mid-serving
def _copy_pages_kernel(table_ptr, host_addr, ids_ptr, n, first, count, num_regions, page_words,
                       TO_HOST: tl.constexpr, WORD: tl.constexpr, WORD_BYTES: tl.constexpr, ALIGNED: tl.constexpr,
                       BLOCK: tl.constexpr):
    # table: [3, num_regions] int64 (region base address, bytes per page, byte offset in a host page);
    # ids: [2, n] int64 (device page, host page). Each program takes (page, region) pairs pid, pid + G, ...
    pid = tl.program_id(0)
    programs = tl.num_programs(0)
    host = host_addr.to(tl.pointer_type(WORD))
    for w in range(pid, n * count, programs):
        i = w // count
        r = first + w % count
        dev = tl.load(ids_ptr + i)
        hst = tl.load(ids_ptr + n + i)
        words = tl.load(table_ptr + num_regions + r) // WORD_BYTES
        offset = tl.load(table_ptr + 2 * num_regions + r) // WORD_BYTES
        region = tl.load(table_ptr + r).to(tl.pointer_type(WORD))
        if ALIGNED:  # sizes and offsets are multiples of 128 bytes, addresses of 16: 16-byte accesses
            words = tl.multiple_of(words, 16)
            offset = tl.multiple_of(offset, 16)
        dptr = region + dev * words
        hptr = host + hst * page_words + offset
        for s in range(0, words, BLOCK):
            o = s + tl.arange(0, BLOCK)
            m = o < words
            src = (dptr if TO_HOST else hptr) + o
            dst = (hptr if TO_HOST else dptr) + o
            if ALIGNED:
                src = tl.max_contiguous(tl.multiple_of(src, 16), BLOCK)
                dst = tl.max_contiguous(tl.multiple_of(dst, 16), BLOCK)
            tl.store(dst, tl.load(src, mask=m), mask=m)


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def word_bytes(values: Sequence[int]) -> int:
    """The widest word (8, 4, 2 or 1 bytes) that divides every size, offset and address in `values`."""
    g = 0
    for v in values:
        g = math.gcd(g, int(v))
    return next(w for w in (8, 4, 2, 1) if g % w == 0)


class TritonPageTransfer(KVPageTransfer):
    """`KVPageTransfer` whose copies run as a Triton kernel (backend "triton"); see the module doc."""

    BACKENDS = ("triton",)

    def __init__(self, regions: Sequence[torch.Tensor], host_buf: torch.Tensor,
                 layer_sizes: Optional[Sequence[int]] = None, backend: str = "triton", max_blocks: int = 0) -> None:
        super().__init__(regions, host_buf, layer_sizes, backend, max_blocks=max_blocks)
        sizes = [t.shape[1] for t in self.regions]
        addresses = [host_buf.data_ptr(), *(t.data_ptr() for t in self.regions)]
        self.word = word_bytes([*sizes, *self.offsets, host_buf.shape[1], *addresses])
        self._word_type = {8: tl.int64, 4: tl.int32, 2: tl.int16, 1: tl.int8}[self.word]
        self._aligned = all(v % 128 == 0 for v in (*sizes, *self.offsets, host_buf.shape[1])) and all(
            a % 16 == 0 for a in addresses)
        self._page_words = host_buf.shape[1] // self.word
        self._dev_table = self._table.to(self.device)  # the kernel reads it on the device

    def copy(self, ids: torch.Tensor, to_host: bool, layers: Optional[range] = None) -> None:
        first, count = self._layer_regions(layers)
        if count == 0 or ids.shape[1] == 0:
            return
        n = ids.shape[1]
        programs = n * count
        cap = self.max_blocks or (PROGRAMS_PER_SM * _sm_count(self.device.index or 0)
                                  if self.device.type == "cuda" else 64)
        ids = ids.to(torch.int64).contiguous()
        _copy_pages_kernel[(min(programs, cap),)](
            self._dev_table, self.host_buf.data_ptr(), ids, n, first, count, len(self.regions), self._page_words,
            TO_HOST=to_host, WORD=self._word_type, WORD_BYTES=self.word,
            ALIGNED=self._aligned, BLOCK=BLOCK)
