"""Compilers, their versions, the CUDA target and the compile/link command lines of a JIT build.

Everything here that ends up in a cache key is path-free: flags that name an install location (tvm-ffi,
CUDA) are added only when the command line is assembled, and the key records the tool *versions*.
"""
from __future__ import annotations

import functools
import os
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

PACKAGE_DIR = Path(__file__).resolve().parent
INCLUDE_DIR = PACKAGE_DIR / "include"
CSRC_DIR = PACKAGE_DIR / "csrc"

# Flags that carry no path. Changing them changes every key (they are key factors).
CXX_FLAGS: Tuple[str, ...] = ("-std=c++17", "-O3", "-fPIC")
CUDA_FLAGS: Tuple[str, ...] = ("-std=c++17", "-O3", "-Xcompiler", "-fPIC", "--expt-relaxed-constexpr", "-lineinfo")
DEBUG_CXX_FLAGS: Tuple[str, ...] = ("-O0", "-g", "-DTIERLM_JIT_SYNC_CHECK")
DEBUG_CUDA_FLAGS: Tuple[str, ...] = ("-O0", "-g", "-DTIERLM_JIT_SYNC_CHECK")
_ARCH = re.compile(r"^(?:sm_?)?(\d+)\.?(\d)(a|f)?$")


@dataclass(frozen=True)
class Toolchain:
    """Resolved compilers and library locations for one build (paths never enter a key)."""

    cxx: str
    nvcc: Optional[str]
    cuda_home: Optional[str]
    tvm_ffi_include: str
    dlpack_include: str
    tvm_ffi_libdir: str


def find_cxx() -> str:
    """The host C++ compiler: ``$CXX`` if set, else ``c++`` on PATH."""
    name = os.environ.get("CXX", "c++")
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"no C++ compiler: {name!r} is not on PATH (set CXX)")
    return found


def find_cuda() -> Tuple[Optional[str], Optional[str]]:
    """(nvcc, CUDA home) or (None, None). Looks at ``$CUDA_HOME``/``$CUDA_PATH``, then nvcc on PATH (whose
    toolkit is the one holding ``include/cuda_runtime.h`` next to it), then /usr/local/cuda."""
    homes = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    on_path = shutil.which("nvcc")
    if on_path is not None:
        homes.append(str(Path(on_path).resolve().parent.parent))
    homes.append("/usr/local/cuda")
    for home in filter(None, homes):
        nvcc = Path(home) / "bin" / "nvcc"
        if nvcc.is_file() and (Path(home) / "include" / "cuda_runtime.h").is_file():
            return str(nvcc), str(Path(home))
    return None, None


def find_nvcc() -> Optional[str]:
    """The nvcc that `load_jit` would use, or None when no CUDA toolkit is found."""
    return find_cuda()[0]


@functools.lru_cache(maxsize=None)
def tool_version(path: str) -> str:
    """The identifying lines of ``<tool> --version`` (memoised per process and path)."""
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=True).stdout
    lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
    if "nvcc" in Path(path).name:
        # "Cuda compilation tools, release 13.0, V13.0.88" and "Build cuda_13.0.r13.0/compiler.36424714_0"
        lines = [ln for ln in lines if ln.startswith(("Cuda compilation tools", "Build "))] or lines
        return " | ".join(lines)
    return lines[0] if lines else ""


def tvm_ffi_version() -> str:
    import tvm_ffi
    return str(tvm_ffi.__version__)


def resolve_toolchain(need_cuda: bool) -> Toolchain:
    """Locate the compilers and tvm-ffi's headers and library; raise if CUDA is needed but absent."""
    from tvm_ffi.libinfo import find_dlpack_include_path, find_include_path, find_libtvm_ffi
    nvcc, cuda_home = find_cuda()
    if need_cuda and nvcc is None:
        raise RuntimeError("CUDA sources need nvcc: none found (set CUDA_HOME or put nvcc on PATH)")
    return Toolchain(cxx=find_cxx(), nvcc=nvcc if need_cuda else None, cuda_home=cuda_home if need_cuda else None,
                     tvm_ffi_include=find_include_path(), dlpack_include=find_dlpack_include_path(),
                     tvm_ffi_libdir=str(Path(find_libtvm_ffi()).parent))


def normalize_arch(arch: str) -> str:
    """'9.0' / '90' / 'sm_90a' / '9.0a' -> '90' / '90a'."""
    m = _ARCH.match(arch.strip())
    if not m:
        raise ValueError(f"invalid CUDA arch {arch!r}: use e.g. '9.0', '90', '9.0a' or 'sm_90a'")
    return f"{m.group(1)}{m.group(2)}{m.group(3) or ''}"


def resolve_cuda_arch(arch: Optional[str]) -> str:
    """The CUDA arch to build for: the argument, else ``TIERLM_JIT_CUDA_ARCH``, else the current GPU's."""
    arch = arch or os.environ.get("TIERLM_JIT_CUDA_ARCH") or None
    if arch:
        return normalize_arch(arch)
    import torch
    if not torch.cuda.is_available():
        raise RuntimeError("cannot pick a CUDA arch: no GPU visible; pass cuda_arch= or set TIERLM_JIT_CUDA_ARCH")
    major, minor = torch.cuda.get_device_capability()
    return f"{major}{minor}"


def target_name(cuda_arch: Optional[str]) -> str:
    """Cache-layout target: ``cpu-<machine>`` for host-only modules, ``sm<arch>-<machine>`` with CUDA."""
    machine = platform.machine() or "unknown"
    return f"sm{cuda_arch}-{machine}" if cuda_arch else f"cpu-{machine}"


def gencode_flags(cuda_arch: str) -> List[str]:
    return [f"-gencode=arch=compute_{cuda_arch},code=sm_{cuda_arch}"]


def include_flags(tc: Toolchain, extra_include_paths: Sequence[str]) -> List[str]:
    dirs = [str(INCLUDE_DIR), *map(str, extra_include_paths), tc.tvm_ffi_include, tc.dlpack_include]
    return [f"-I{d}" for d in dirs]


def compile_command(tc: Toolchain, source: Path, obj: Path, flags: Sequence[str], includes: Sequence[str],
                    cuda: bool) -> List[str]:
    if cuda:
        assert tc.nvcc is not None
        return [tc.nvcc, "-ccbin", tc.cxx, *flags, *includes, "-c", str(source), "-o", str(obj)]
    return [tc.cxx, *flags, *includes, "-c", str(source), "-o", str(obj)]


def link_command(tc: Toolchain, objs: Sequence[Path], out: Path, extra_ldflags: Sequence[str]) -> List[str]:
    cmd = [tc.cxx, "-shared", *map(str, objs), "-o", str(out), f"-L{tc.tvm_ffi_libdir}", "-ltvm_ffi"]
    if tc.cuda_home is not None:
        libdir = Path(tc.cuda_home) / "lib64"
        if not libdir.is_dir():
            libdir = Path(tc.cuda_home) / "lib"
        cmd += [f"-L{libdir}", "-lcudart", f"-Wl,-rpath,{libdir}"]
    return cmd + list(extra_ldflags)
