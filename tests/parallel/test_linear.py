"""The small-batch linear dispatch: which rows go to the tuned kernel, and the plans a model gets."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from tierlm.parallel.linear import ColumnParallelLinear, RowParallelLinear, linear, tune_small_batch_linears

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_rows_round_up_to_a_bucket_and_past_the_largest_go_to_cublas():
    pytest.importorskip("triton")
    from tierlm.kernels.gemv_tune import bucket_of

    assert [bucket_of(r) for r in (1, 2, 3, 4, 5, 8, 9, 256)] == [1, 2, 4, 4, 0, 0, 0, 0]


def test_without_a_plan_or_off_the_gpu_the_layer_is_f_linear():
    layer = ColumnParallelLinear(16, 8, bias=True)
    x = torch.randn(3, 16)
    assert torch.equal(layer(x), torch.nn.functional.linear(x, layer.weight, layer.bias))
    plan = {"plain": {4: object()}}  # a CPU tensor never reaches the kernel, whatever the plan says
    assert torch.equal(linear(x, layer.weight, layer.bias, plan), layer(x))
    model = nn.Sequential(ColumnParallelLinear(16, 8), RowParallelLinear(8, 16))
    assert tune_small_batch_linears(model) == 0 and model[0].gemv_plan is None and model[0].gemm_plan is None


class _Declaring(nn.Sequential):
    """Its first linear reads after an RMSNorm, its second after SiLU·mul (as a pre-norm block and its MLP
    declare)."""

    def fused_prologues(self):
        return [(self[0], "rmsnorm"), (self[1], "silu_mul")]


@cuda
def test_a_tuned_model_matches_cublas_at_every_decode_batch(tmp_path, monkeypatch):
    monkeypatch.setenv("TIERLM_CACHE_DIR", str(tmp_path))
    model = _Declaring(ColumnParallelLinear(1024, 4096), RowParallelLinear(4096, 1024)).cuda().to(torch.bfloat16)
    assert tune_small_batch_linears(model) == 2
    assert set(model[0].gemv_plan) == {"plain", "rmsnorm"} and set(model[1].gemv_plan) == {"plain", "silu_mul"}
    assert set(model[0].gemv_plan["plain"]) == {1, 2, 4}
    assert set(model[1].gemm_plan.configs) == {8, 16, 32, 64, 128, 256}
    for rows in (1, 3, 8, 16, 100, 256, 300):
        for layer, k in ((model[0], 1024), (model[1], 4096)):
            x = torch.randn(rows, k, device="cuda", dtype=torch.bfloat16)
            ref = x.float() @ layer.weight.float().T
            assert (layer(x).float() - ref).abs().max() <= 0.02 * ref.abs().max(), (rows, k)
    assert list(tmp_path.rglob("*.json")), "the plan is kept in the cache root"


@cuda
@pytest.mark.parametrize("rows", [3, 16, 100])
def test_prologues_are_fused_into_the_gemv_only_and_every_path_matches_the_unfused_layers(rows):
    """Plans given by hand (no timing): the GEMV at 1-4 rows, the skinny GEMM (with a K split) above. At GEMV
    rows the norm is handed over unevaluated (`NormedInput`) and the SiLU·mul fused; above, both run unfused
    before the skinny GEMM. Either way the results and the new residual are the unfused layers'."""
    from tierlm.kernels.fused import rmsnorm, silu_mul
    from tierlm.kernels.gemv import GemvConfig
    from tierlm.kernels.skinny_gemm import SkinnyConfig, split_counters
    from tierlm.kernels.skinny_gemm_tune import BUCKETS, SkinnyPlan
    from tierlm.layers.block import _norm_into
    from tierlm.layers.norm import RMSNorm
    from tierlm.parallel.linear import NormedInput

    torch.manual_seed(0)
    dt = torch.bfloat16
    up, down, norm = (ColumnParallelLinear(512, 768).cuda().to(dt), RowParallelLinear(384, 512).cuda().to(dt),
                      RMSNorm(512, 1e-6).cuda().to(dt))
    g, s = GemvConfig(4, 512, 4, True), SkinnyConfig(64, 128, 2, 4, 4)
    for layer, prologue in ((up, "rmsnorm"), (down, "silu_mul")):
        layer.gemv_plan = {p: {b: g for b in (1, 2, 4)} for p in ("plain", prologue)}
        layer.gemm_plan = SkinnyPlan({b: s for b in BUCKETS},
                                     split_counters(layer.weight.shape[0], s, layer.weight.device))
    with torch.no_grad():
        norm.weight.normal_()
    x, res = (torch.randn(rows, 512, device="cuda", dtype=dt) for _ in range(2))
    normed, new_res = _norm_into(norm, x, res, up)
    assert isinstance(normed, NormedInput) == (rows <= 4)
    got = up(normed)
    ref_normed, ref_res = rmsnorm(x, norm.weight, 1e-6, res)
    ref = ref_normed.float() @ up.weight.float().T
    assert torch.equal(new_res, ref_res)
    assert (got.float() - ref).abs().max() <= 0.02 * ref.abs().max()
    gu = torch.randn(rows, 768, device="cuda", dtype=dt)
    fused = down.forward_silu_mul(gu)
    assert (fused is not None) == (rows <= 4)
    got = fused if fused is not None else down(silu_mul(gu))
    ref = silu_mul(gu).float() @ down.weight.float().T
    assert (got.float() - ref).abs().max() <= 0.02 * ref.abs().max()
