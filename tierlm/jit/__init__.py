"""TierLM's JIT kernels: C++/CUDA sources compiled at run time against apache-tvm-ffi, cached under the root.

Public API
    ``load_jit(name, *template_args, cpp_files=, cuda_files=, cpp_wrappers=, cuda_wrappers=, extra_cflags=,
    extra_cuda_cflags=, extra_ldflags=, extra_include_paths=, cuda_arch=None, debug=None)``
        build (or fetch) and load a module; memoised per process
    ``build_jit(...) -> CacheEntry``   same arguments, builds without loading (compile-only checks, warm-up)
    ``make_cpp_args(*values) -> CppArgs``  ints/bools/torch dtypes as C++ template arguments
    ``JitBuildError``                   compile/link failure with the command and compiler output
    ``INCLUDE_DIR``, ``CSRC_DIR``       our headers (``#include <tierlm/...>``) and kernel sources
    ``tierlm.jit.kv_transfer``          KV page copies between the device pool and the page-first host pool
    ``tierlm.jit.add_constant``         the example kernel of docs/jit_kernels.md
    ``python -m tierlm.jit``            writes a ``.clangd`` for editing the kernel sources

Environment: ``TIERLM_JIT_CUDA_ARCH`` (e.g. ``9.0``), ``TIERLM_JIT_DEBUG=1`` (-O0 -g, synchronising launch
checks), ``TIERLM_JIT_VERBOSE=1`` (log compiler commands), ``TIERLM_JIT_KEEP_FAILED=1`` (keep a failed
build under ``<cache root>/jit/.failed/``), and the cache root's ``TIERLM_CACHE_DIR`` / ``TIERLM_CACHE_REQUIRE_HIT``.
Importing this package does not import torch or tvm_ffi.
"""
from tierlm.jit.cpp_args import CppArgs, make_cpp_args
from tierlm.jit.loader import JitBuildError, JitSpec, build_jit, load_jit
from tierlm.jit.toolchain import CSRC_DIR, INCLUDE_DIR

__all__ = ["CSRC_DIR", "CppArgs", "INCLUDE_DIR", "JitBuildError", "JitSpec", "build_jit", "load_jit",
           "make_cpp_args"]
