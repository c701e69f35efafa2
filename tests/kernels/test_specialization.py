"""Kernels launched outside CUDA graphs take counts that change from pass to pass (tokens, pages). Triton
specializes an integer argument on being 1 or a multiple of 16 unless told not to, so the first pass whose
count falls in the other class would compile the kernel again (hundreds of milliseconds with every request
waiting). These kernels keep such counts unspecialized and their shape constants specialized."""
from __future__ import annotations

import pytest

pytest.importorskip("triton")


def _flags(kernel) -> dict[str, bool]:
    return {p.name: p.do_not_specialize for p in kernel.params}


@pytest.mark.parametrize("kernel_path,per_pass,shape", [
    ("tierlm.kernels.fused:_qk_norm_rope_kernel", ["n_rows"], ["stride_t", "num_q_heads"]),
    ("tierlm.kernels.kv_pages:_copy_pages_kernel", ["n", "first", "count"], ["num_regions", "page_words"]),
    ("tierlm.kernels.extend_attention:_extend_kernel", ["batch", "num_blocks", "num_tiles"], []),
    ("tierlm.kernels.mla_extend:_mla_extend_kernel", ["num_blocks"], ["stride_qt", "stride_buf", "stride_r2t"]),
    ("tierlm.kernels.packed_tiles:_packed_tiles_kernel", ["batch", "num_tiles"], []),
    ("tierlm.kernels.fused_moe:_gate_up_kernel", ["num_pairs", "max_rows"], ["hidden"]),
    ("tierlm.kernels.fused_moe:_down_kernel", ["num_pairs", "max_rows"], []),
    ("tierlm.kernels.race_sample:_pick_kernel", ["seed", "stride_table", "stride_pen"], ["vocab", "stride_row"]),
    ("tierlm.kernels.skinny_gemm:_skinny_kernel", ["M", "M_PAD"], ["N", "K", "K_SPLIT", "stride_wn"]),
    ("tierlm.kernels.step_metadata:_scatter_2d_kernel", ["n"], ["stride_row"]),
    ("tierlm.kernels.balanced_splits:_plan_kernel", ["n_batch", "goal", "n_items", "n_merges"], []),
    ("tierlm.kernels.step_metadata:_pad_inputs_kernel", ["m", "n", "size"], ["stride_table"]),
    ("tierlm.kernels.step_metadata:_pad_mixed_kernel", ["t", "d", "e", "base", "n"], []),
    ("tierlm.kernels.step_metadata:_expand_kernel", ["t", "b"], ["stride_table"]),
])
def test_per_pass_counts_are_not_specialized(kernel_path: str, per_pass: list[str], shape: list[str]):
    import importlib

    module, name = kernel_path.split(":")
    flags = _flags(getattr(importlib.import_module(module), name))
    assert all(flags[a] for a in per_pass), (kernel_path, flags)
    assert not any(flags[a] for a in shape), (kernel_path, flags)


def test_mla_extend_metadata_pointers_are_not_specialized_on_alignment():
    # the absorbed requests' metadata starts wherever the first of them sits in the pass (after decompressed ones)
    from tierlm.kernels.mla_extend import _mla_extend_kernel

    aligned = {p.name: not p.do_not_specialize_on_alignment for p in _mla_extend_kernel.params}
    assert not any(aligned[a] for a in ("req_rows", "prefix_lens", "q_starts", "q_ends")), aligned
    assert all(aligned[a] for a in ("q_ptr", "latent_buf", "out_ptr", "req_to_token")), aligned
