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


@cuda
def test_a_tuned_model_matches_cublas_at_every_decode_batch(tmp_path, monkeypatch):
    monkeypatch.setenv("TIERLM_CACHE_DIR", str(tmp_path))
    model = nn.Sequential(ColumnParallelLinear(1024, 4096), RowParallelLinear(4096, 1024)).cuda().to(torch.bfloat16)
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
