"""The decode-path kernels compile for Hopper (sm_90) on a machine without a GPU: the interpreter runs a
kernel's meaning, not the compiler, so only this catches a kernel that would fail to build on the device."""
from __future__ import annotations

import pytest

pytest.importorskip("triton")

from benchmarks.decode_sm90_check import compile_for_sm90, decode_variants  # noqa: E402


@pytest.mark.parametrize("label,kernel,consts,pointers", decode_variants(),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_compiles_for_sm90(label, kernel, consts, pointers):
    try:
        compiled = compile_for_sm90(kernel, consts, pointers)
    except (ImportError, RuntimeError) as e:  # a Triton build without its CUDA backend or ptxas
        if "ptxas" in str(e) or "backend" in str(e).lower():
            pytest.skip(f"no CUDA compiler in this Triton build: {e}")
        raise
    assert compiled.asm["cubin"], label


@pytest.mark.parametrize("variant", [{}, {"order": "packed"}],
                         ids=["heavy_first", "packed"])
def test_extend_compiles_for_sm90_without_spills(variant):
    """The extend kernel as the engine launches it eagerly and in captured passes (the packed order): built for
    sm_90a with Triton's ptxas, no register spills and the wgmma pipeline not serialized."""
    from benchmarks.extend_sm90_check import compile_variant

    try:
        report = compile_variant(variant)
    except (ImportError, RuntimeError, FileNotFoundError) as e:
        if "ptxas" in str(e) or "backend" in str(e).lower() or isinstance(e, FileNotFoundError):
            pytest.skip(f"no CUDA compiler in this Triton build: {e}")
        raise
    assert not report["spills"] and not report["serialized"] and report["per_sm"] >= 1, report
