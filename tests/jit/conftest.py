"""JIT tests share one cache root (package-scoped), so each module is compiled at most once per run."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("tvm_ffi", reason="apache-tvm-ffi is not installed (it is a runtime dependency: pin it)")

from tierlm.jit.toolchain import find_nvcc  # noqa: E402

HERE = Path(__file__).resolve().parent
PROBE_DIR = HERE / "csrc"

requires_cxx = pytest.mark.skipif(shutil.which(os.environ.get("CXX", "c++")) is None, reason="no C++ compiler")
requires_nvcc = pytest.mark.skipif(find_nvcc() is None, reason="no nvcc (CUDA toolkit) on this machine")


def _cuda() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except ImportError:
        return False


requires_cuda = pytest.mark.skipif(not _cuda(), reason="needs a CUDA device")


@pytest.fixture(scope="package", autouse=True)
def jit_cache_root(tmp_path_factory) -> Path:
    """A private TIERLM_CACHE_DIR shared by all JIT tests (restored once they are done)."""
    root = tmp_path_factory.mktemp("jit-cache")
    saved = {k: os.environ.get(k) for k in ("TIERLM_CACHE_DIR", "TIERLM_CACHE_REQUIRE_HIT", "TIERLM_JIT_DEBUG")}
    os.environ["TIERLM_CACHE_DIR"] = str(root)
    os.environ.pop("TIERLM_CACHE_REQUIRE_HIT", None)
    os.environ.pop("TIERLM_JIT_DEBUG", None)
    yield root
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="package")
def probe_module(jit_cache_root):
    """Test-only kernels exercising the C++ utilities (tests/jit/csrc/probe.h)."""
    from tierlm.jit import load_jit
    return load_jit("jit_probe", cpp_files=[str(PROBE_DIR / "probe.h")], cpp_wrappers=[
        ("strides", "jit_probe::strides"), ("pair", "jit_probe::pair"), ("check_small", "jit_probe::check_small"),
        ("range_sum", "jit_probe::range_sum"), ("unbound", "jit_probe::unbound")])
