"""`load_jit` / `build_jit`: compile C++/CUDA sources with tvm-ffi's headers into a cached, checked module.

A build lives at ``<root>/jit/<target>/<name>/<key>/`` (a `tierlm.cachedir` entry: atomic publish, one
builder per key across processes, manifest-verified, GC-able). The key covers the contents of every
source and transitively included header of ours, template arguments, exported wrappers, flags, the
``c++ --version`` and ``nvcc --version`` lines, the tvm-ffi version and the target arch.
"""
from __future__ import annotations

import datetime
import functools
import logging
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from tierlm.cachedir import CacheEntry, get_or_build, resolve_root
from tierlm.cachedir.inventory import FAILED_DIR
from tierlm.jit import toolchain as tcm
from tierlm.jit.sources import source_digests

logger = logging.getLogger(__name__)

JIT_FORMAT = 1  # bump when the build recipe changes in a way the factors below do not capture
Wrappers = Sequence[Tuple[str, str]]


class JitBuildError(RuntimeError):
    """A compile or link step failed; the message holds the command and the compiler's output."""


@dataclass(frozen=True)
class JitSpec:
    """Everything that defines one JIT module (hashable: the per-process memo is keyed by it)."""

    name: str
    template_args: Tuple[str, ...] = ()
    cpp_files: Tuple[str, ...] = ()
    cuda_files: Tuple[str, ...] = ()
    cpp_wrappers: Tuple[Tuple[str, str], ...] = ()
    cuda_wrappers: Tuple[Tuple[str, str], ...] = ()
    extra_cflags: Tuple[str, ...] = ()
    extra_cuda_cflags: Tuple[str, ...] = ()
    extra_ldflags: Tuple[str, ...] = ()
    extra_include_paths: Tuple[str, ...] = ()
    cuda_arch: Optional[str] = None
    debug: bool = False

    @property
    def has_cuda(self) -> bool:
        return bool(self.cuda_files or self.cuda_wrappers)

    def cxx_flags(self) -> List[str]:
        return [*tcm.CXX_FLAGS, *(tcm.DEBUG_CXX_FLAGS if self.debug else ()), *self.extra_cflags]

    def cuda_flags(self) -> List[str]:
        assert self.cuda_arch is not None
        return [*tcm.CUDA_FLAGS, *(tcm.DEBUG_CUDA_FLAGS if self.debug else ()), *tcm.gencode_flags(self.cuda_arch),
                *self.extra_cuda_cflags]


def make_spec(name: str, *template_args: Any, cpp_files: Sequence[str] = (), cuda_files: Sequence[str] = (),
              cpp_wrappers: Wrappers = (), cuda_wrappers: Wrappers = (), extra_cflags: Sequence[str] = (),
              extra_cuda_cflags: Sequence[str] = (), extra_ldflags: Sequence[str] = (),
              extra_include_paths: Sequence[str] = (), cuda_arch: Optional[str] = None,
              debug: Optional[bool] = None) -> JitSpec:
    """Normalise `load_jit`'s arguments: absolute source paths, resolved arch, debug from the environment."""
    def resolve(files: Sequence[str]) -> Tuple[str, ...]:
        out = []
        for f in files:
            p = Path(f)
            p = p if p.is_absolute() else tcm.CSRC_DIR / p
            if not p.is_file():
                raise FileNotFoundError(f"JIT module {name!r}: source {f!r} not found (looked at {p})")
            out.append(str(p.resolve()))
        return tuple(out)

    if not (cpp_files or cuda_files):
        raise ValueError(f"JIT module {name!r}: give cpp_files and/or cuda_files")
    if (cpp_wrappers and not cpp_files) or (cuda_wrappers and not cuda_files):
        raise ValueError(f"JIT module {name!r}: wrappers of a language need sources of that language")
    has_cuda = bool(cuda_files)
    if debug is None:
        debug = os.environ.get("TIERLM_JIT_DEBUG", "") not in ("", "0")
    return JitSpec(
        name=name, template_args=tuple(str(a) for a in template_args),
        cpp_files=resolve(cpp_files), cuda_files=resolve(cuda_files),
        cpp_wrappers=tuple((str(a), str(b)) for a, b in cpp_wrappers),
        cuda_wrappers=tuple((str(a), str(b)) for a, b in cuda_wrappers),
        extra_cflags=tuple(extra_cflags), extra_cuda_cflags=tuple(extra_cuda_cflags),
        extra_ldflags=tuple(extra_ldflags),
        extra_include_paths=tuple(str(Path(p).resolve()) for p in extra_include_paths),
        cuda_arch=tcm.resolve_cuda_arch(cuda_arch) if has_cuda else None, debug=bool(debug))


def key_factors(spec: JitSpec, tc: tcm.Toolchain) -> Dict[str, Any]:
    """The declared inputs of a build (no machine paths): what the cache key hashes."""
    extra = [Path(p) for p in spec.extra_include_paths]
    return {
        "format": JIT_FORMAT,
        "template_args": list(spec.template_args),
        "wrappers": {"cpp": [list(w) for w in spec.cpp_wrappers], "cuda": [list(w) for w in spec.cuda_wrappers]},
        "sources": source_digests([Path(f) for f in spec.cpp_files + spec.cuda_files], extra),
        "top_sources": [Path(f).name for f in spec.cpp_files + spec.cuda_files],
        "cxx_flags": spec.cxx_flags(),
        "cuda_flags": spec.cuda_flags() if spec.has_cuda else [],
        "ldflags": list(spec.extra_ldflags),
        "include_dirs": ["<tierlm>/jit/include", *[f"<extra{i}>" for i in range(len(extra))], "<tvm-ffi>", "<dlpack>"],
        "cxx": tcm.tool_version(tc.cxx),
        "nvcc": tcm.tool_version(tc.nvcc) if tc.nvcc else None,
        "tvm_ffi": tcm.tvm_ffi_version(),
        "target": tcm.target_name(spec.cuda_arch),
    }


def _wrapper_source(files: Sequence[str], wrappers: Wrappers, lang: str) -> str:
    lines = [f"// Generated by tierlm.jit ({lang} wrappers); do not edit.",
             "#include <tvm/ffi/function.h>", ""]
    lines += [f'#include "{f}"' for f in files]
    lines += ["", "namespace tierlm_jit_exports {"]
    # Each exported symbol is bound to a constexpr function pointer first, so template arguments with
    # commas (f<1, 2>) never reach the export macro's argument list.
    lines += [f"constexpr auto {lang}_fn_{i} = &{sym};" for i, (_, sym) in enumerate(wrappers)]
    lines += ["}  // namespace tierlm_jit_exports", ""]
    lines += [f"TVM_FFI_DLL_EXPORT_TYPED_FUNC({py}, tierlm_jit_exports::{lang}_fn_{i});"
              for i, (py, _) in enumerate(wrappers)]
    return "\n".join(lines) + "\n"


def _run(cmd: List[str], log: List[str], name: str) -> None:
    log.append("$ " + " ".join(cmd))
    if os.environ.get("TIERLM_JIT_VERBOSE", "") not in ("", "0"):
        logger.warning("tierlm.jit %s: %s", name, " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    log.append(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise JitBuildError(f"JIT module {name!r}: command failed with exit code {proc.returncode}:\n"
                            f"  {' '.join(cmd)}\n{proc.stdout}{proc.stderr}")


def _compile_all(spec: JitSpec, tc: tcm.Toolchain, out_dir: Path, obj_dir: Path) -> Path:
    includes = tcm.include_flags(tc, spec.extra_include_paths)
    log: List[str] = []
    objs: List[Path] = []
    jobs = []
    if spec.cpp_files:
        src = out_dir / "wrap_cpp.cc"
        src.write_text(_wrapper_source(spec.cpp_files, spec.cpp_wrappers, "cpp"))
        jobs.append(tcm.compile_command(tc, src, obj_dir / "cpp.o", spec.cxx_flags(), includes, cuda=False))
        objs.append(obj_dir / "cpp.o")
    if spec.cuda_files:
        src = out_dir / "wrap_cuda.cu"
        src.write_text(_wrapper_source(spec.cuda_files, spec.cuda_wrappers, "cuda"))
        jobs.append(tcm.compile_command(tc, src, obj_dir / "cuda.o", spec.cuda_flags(), includes, cuda=True))
        objs.append(obj_dir / "cuda.o")
    try:
        for cmd in jobs:  # sequential: CI machines are small and nvcc is memory-hungry
            _run(cmd, log, spec.name)
        so = out_dir / f"{spec.name}.so"
        _run(tcm.link_command(tc, objs, so, spec.extra_ldflags), log, spec.name)
    finally:
        (out_dir / "build.log").write_text("\n".join(log))
    return so


def _build_into(spec: JitSpec, tc: tcm.Toolchain, staging: Path, failed_dir: Path) -> None:
    obj_dir = staging / "obj"
    obj_dir.mkdir()
    try:
        _compile_all(spec, tc, staging, obj_dir)
    except JitBuildError as e:
        if os.environ.get("TIERLM_JIT_KEEP_FAILED", "") not in ("", "0"):
            stamp = datetime.datetime.now().strftime("%Y%m%d_%H%M%S")
            kept = failed_dir / f"{spec.name}-{stamp}-{uuid.uuid4().hex[:8]}"
            shutil.copytree(staging, kept)
            raise JitBuildError(f"{e}\n(build directory kept at {kept})") from None
        raise
    finally:
        shutil.rmtree(obj_dir, ignore_errors=True)  # objects are not part of the entry


def build_jit(name: str, *template_args: Any, **kwargs: Any) -> CacheEntry:
    """Build (or find) the module without loading it; same arguments as `load_jit`. Not memoised.

    Returns the cache entry (``entry.hit`` tells a cache hit from a fresh build; the library is
    ``entry.path / f"{name}.so"``). Raises `tierlm.cachedir.CacheMissError` on a miss under
    ``TIERLM_CACHE_REQUIRE_HIT=1`` and `JitBuildError` when compiling fails.
    """
    return build_spec(make_spec(name, *template_args, **kwargs))


def build_spec(spec: JitSpec) -> CacheEntry:
    """`build_jit` for an already normalised `JitSpec`."""
    tc = tcm.resolve_toolchain(spec.has_cuda)
    factors = key_factors(spec, tc)
    entry_name = f"{factors['target']}/{spec.name}"
    root = resolve_root()
    failed_dir = root.subsystem_dir("jit") / FAILED_DIR  # kept under the root, evicted first by GC
    return get_or_build("jit", entry_name, factors, lambda staging: _build_into(spec, tc, staging, failed_dir),
                        root=root)


@functools.lru_cache(maxsize=None)
def _load_memo(spec: JitSpec, root: str) -> Tuple[Any, CacheEntry]:
    import tvm_ffi
    entry = build_spec(spec)
    module = tvm_ffi.load_module(str(entry.path / f"{spec.name}.so"))
    return module, entry  # the entry (and its in-use lease) lives as long as the memo


def load_jit(name: str, *template_args: Any, cpp_files: Sequence[str] = (), cuda_files: Sequence[str] = (),
             cpp_wrappers: Wrappers = (), cuda_wrappers: Wrappers = (), extra_cflags: Sequence[str] = (),
             extra_cuda_cflags: Sequence[str] = (), extra_ldflags: Sequence[str] = (),
             extra_include_paths: Sequence[str] = (), cuda_arch: Optional[str] = None,
             debug: Optional[bool] = None) -> Any:
    """Build (or fetch from the cache) and load a tvm-ffi module; memoised per process.

    `cpp_files` / `cuda_files` are paths relative to ``tierlm/jit/csrc`` (or absolute); each language's
    files are included into one generated translation unit that exports ``wrappers``:
    ``[(python_name, cpp_symbol)]``, e.g. ``("add_constant", "add_constant_cpu<5>")``. `template_args`
    (see `make_cpp_args`) are key factors. `cuda_arch` defaults to ``TIERLM_JIT_CUDA_ARCH`` or the current
    GPU; `debug` (default ``TIERLM_JIT_DEBUG``) builds with -O0 -g and a synchronising launch check.
    """
    spec = make_spec(name, *template_args, cpp_files=cpp_files, cuda_files=cuda_files, cpp_wrappers=cpp_wrappers,
                     cuda_wrappers=cuda_wrappers, extra_cflags=extra_cflags, extra_cuda_cflags=extra_cuda_cflags,
                     extra_ldflags=extra_ldflags, extra_include_paths=extra_include_paths, cuda_arch=cuda_arch,
                     debug=debug)
    return _load_memo(spec, str(resolve_root().path))[0]
