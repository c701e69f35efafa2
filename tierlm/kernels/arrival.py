"""Arrival counters: the last of a group of programs to finish its part does the group's closing work (the
skinny GEMM's split-K sum) in a fixed order, so the result does not depend on which finished first, as it
would with atomic adds of the parts.

Contract: each program of the group writes its part, then calls `last_to_arrive` once; the one that gets True
reads the others' parts past L1 (`cache_modifier=".cg"`) and then calls `rearm`, so the counter is zero again
for the next launch (CUDA-graph replays included). Launches sharing counters must not overlap (one stream).
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def last_to_arrive(counter, programs):
    """Whether this program is the last of `programs` to arrive at `counter`. The barrier makes every thread's
    writes part of this program's release; the acquire makes every earlier arrival's writes visible."""
    tl.debug_barrier()
    return tl.atomic_add(counter, 1, sem="acq_rel", scope="gpu") == programs - 1


@triton.jit
def rearm(counter):
    """Zero `counter` for the next launch (by the last program to arrive, after its closing work)."""
    tl.atomic_xchg(counter, 0, sem="relaxed", scope="gpu")
