"""Example JIT kernel: ``add_constant(src, c) == src + c`` with `c` baked in as a template argument.

Kept deliberately small: it is the running example of docs/jit_kernels.md.
"""
from __future__ import annotations

import functools
from typing import Any

import torch

from tierlm.jit.cpp_args import make_cpp_args
from tierlm.jit.loader import load_jit


@functools.lru_cache(maxsize=None)
def _module(constant: int, cuda: bool) -> Any:
    args = make_cpp_args(constant)
    if cuda:
        return load_jit("add_constant_cuda", *args, cuda_files=["add_constant.cuh"],
                        cuda_wrappers=[("add_constant", f"tierlm_kernels::add_constant_cuda<{args}>")])
    return load_jit("add_constant_cpu", *args, cpp_files=["add_constant_cpu.h"],
                    cpp_wrappers=[("add_constant", f"tierlm_kernels::add_constant_cpu<{args}>")])


def add_constant(src: torch.Tensor, constant: int) -> torch.Tensor:
    """``src + constant`` computed by a JIT kernel (CPU: int32/int64/float32; CUDA: int32)."""
    dst = torch.empty_like(src)
    _module(int(constant), src.is_cuda).add_constant(dst, src)
    return dst
