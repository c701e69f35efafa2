"""The L2 read-ahead hint (`tierlm.kernels.l2_ahead`): where it acts, and that it never changes a result."""
from __future__ import annotations

import pytest
import torch

from tierlm.kernels.l2_ahead import ENV, can_l2_ahead, l2_ahead, worth_l2_ahead
from tierlm.parallel.linear import RowParallelLinear

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_nothing_off_the_gpu():
    w = torch.randn(64, 64)
    assert not can_l2_ahead(w) and not worth_l2_ahead(w)
    assert l2_ahead(w) is False


def test_read_ahead_is_a_no_op_on_cpu():
    layer = RowParallelLinear(64, 32)
    x = torch.randn(2, 64)
    before = layer(x)
    layer.read_ahead(x)
    assert torch.equal(layer(x), before)


@cuda
def test_where_it_acts(monkeypatch):
    if torch.cuda.get_device_capability()[0] < 9:
        pytest.skip("bulk prefetch needs sm_90")
    monkeypatch.delenv(ENV, raising=False)
    w = torch.randn(1024, 1024, device="cuda", dtype=torch.bfloat16)
    assert can_l2_ahead(w) and worth_l2_ahead(w)
    assert not can_l2_ahead(w.view(-1)[4:1028])  # 8 bytes past an aligned start
    assert not can_l2_ahead(w.t())  # not contiguous
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    assert not worth_l2_ahead(torch.empty(l2, dtype=torch.uint8, device="cuda"))  # would not stay in L2
    monkeypatch.setenv(ENV, "0")
    assert not worth_l2_ahead(w)


@cuda
@pytest.mark.parametrize("evict_last", [False, True])
@pytest.mark.parametrize("chunk_kib", [16, 64])
def test_never_changes_a_result(evict_last, chunk_kib):
    if torch.cuda.get_device_capability()[0] < 9:
        pytest.skip("bulk prefetch needs sm_90")
    from tierlm.kernels.gemv import GemvConfig, gemv

    gen = torch.Generator(device="cuda").manual_seed(0)
    w = torch.randn(3000, 1024, generator=gen, device="cuda").to(torch.bfloat16)  # not a whole number of chunks
    x = torch.randn(1, 1024, generator=gen, device="cuda").to(torch.bfloat16)
    cfg = GemvConfig(4, 512, 4, True)
    before = gemv(x, w, config=cfg)
    assert l2_ahead(w, chunk_kib=chunk_kib, evict_last=evict_last)
    assert torch.equal(gemv(x, w, config=cfg), before)
    torch.cuda.synchronize()
