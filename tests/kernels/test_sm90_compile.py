"""The decode-path kernels compile for Hopper (sm_90) on a machine without a GPU: the interpreter runs a
kernel's meaning, not the compiler, so only this catches a kernel that would fail to build on the device."""
from __future__ import annotations

import pytest

pytest.importorskip("triton")

from benchmarks.decode_sm90_check import HOPPER_SHARED, compile_for_sm90, decode_variants  # noqa: E402
from tests.kernels.sm90 import cuda_compiler_or_skip  # noqa: E402


@pytest.mark.parametrize("label,kernel,consts,pointers", decode_variants(),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_compiles_for_sm90(label, kernel, consts, pointers):
    with cuda_compiler_or_skip():
        compiled = compile_for_sm90(kernel, consts, pointers)
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


def test_variants_built_side_by_side_are_the_ones_built_alone(monkeypatch, tmp_path):
    """The start-up tuners build their candidates on a pool of threads (`kernels.prebuild`): GEMV variants compiled
    for sm_90 from three threads at once are byte for byte the binaries compiled one at a time (nothing taken from
    Triton's cache: every build runs the compiler)."""
    import torch

    from tierlm.kernels.prebuild import prebuild

    variants = [v for v in decode_variants() if v[0].startswith("gemv")][:6]
    assert len(variants) == 6
    monkeypatch.setenv("TRITON_ALWAYS_COMPILE", "1")

    def build(variant, into: dict):
        def run():
            into[variant[0]] = compile_for_sm90(variant[1], dict(variant[2]), variant[3]).asm["cubin"]
        return run

    alone, pooled = {}, {}
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "alone"))
    with cuda_compiler_or_skip():
        for variant in variants:
            build(variant, alone)()
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "pooled"))
    assert prebuild([build(v, pooled) for v in variants], torch.device("cpu"), threads=3) == 0
    assert pooled.keys() == alone.keys() and all(pooled[k] == alone[k] for k in alone)
    assert len(list((tmp_path / "pooled").iterdir())) >= len(variants), "the pooled builds wrote their own entries"


@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
def test_latent_extend_fits_hopper_shared_memory_in_either_dtype(dtype):
    """The latent extend kernel as `mla_extend` launches it for bf16 and float32 queries (the float32 query tile
    is twice the size: its launch takes narrower latent tiles) asks for no more shared memory than an SM holds;
    compiling alone does not check this, the launch fails on the GPU."""
    import triton.language as tl

    import torch

    from tierlm.kernels.mla_extend import MLAExtendConfig, _mla_extend_kernel, launch_block_n

    cfg = MLAExtendConfig()
    wide = dtype == "fp32"
    consts = dict(NUM_HEADS=16, LORA=512, ROPE=64, BLOCK_T=cfg.block_t, BLOCK_H=cfg.block_h,
                  BLOCK_N=launch_block_n(cfg, torch.float32 if wide else torch.bfloat16), BLOCK_C=512, BLOCK_R=64,
                  DOT_PRECISION="ieee" if wide else "tf32", WIDE=tl.float32 if wide else tl.bfloat16)
    pointers = {"q_ends": "*i32", **({n: "*fp32" for n in ("q_ptr", "latent_buf", "out_ptr")} if wide else {})}
    with cuda_compiler_or_skip():
        compiled = compile_for_sm90(_mla_extend_kernel, consts, pointers, num_warps=cfg.num_warps,
                                    num_stages=cfg.num_stages)
        wider = compile_for_sm90(_mla_extend_kernel, {**consts, "BLOCK_N": cfg.block_n}, pointers,
                                 num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    assert compiled.metadata.shared <= HOPPER_SHARED
    assert wide == (wider.metadata.shared > HOPPER_SHARED), "float32 at the bf16 tile would not fit (else: no need)"
