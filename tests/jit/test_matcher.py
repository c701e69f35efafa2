"""TensorMatcher / RuntimeCheck errors reach Python naming argument, dimension, expected and actual."""
from __future__ import annotations

import pytest
import torch

from tests.jit.conftest import requires_cxx
from tierlm.jit import kv_transfer as kvt
from tierlm.jit.add_constant import add_constant

pytestmark = requires_cxx


def test_size_symbol_disagreement_names_everything():
    dst = torch.empty(10, dtype=torch.int32)
    src = torch.randint(0, 9, (11,), dtype=torch.int32)
    mod = __import__("tierlm.jit.add_constant", fromlist=["_module"])._module(7, False)
    with pytest.raises(ValueError) as e:
        mod.add_constant(dst, src)
    msg = str(e.value)
    assert "src: dimension 0 expected size 10 (num_elements, from dst dimension 0), got 11" in msg, msg


def test_dtype_and_rank_and_contiguity(probe_module):
    with pytest.raises(ValueError, match=r"dst: dtype expected one of \[int32, int64, float32\], got float64"):
        add_constant(torch.randn(4, dtype=torch.float64), 1)
    with pytest.raises(ValueError, match=r"dst: expected 1 dimensions, got 2 \(shape \[2, 3\]\)"):
        add_constant(torch.randn(2, 3), 1)
    with pytest.raises(ValueError, match=r"src: must be contiguous; stride of dimension 0 expected 1, got 2"):
        mod = __import__("tierlm.jit.add_constant", fromlist=["_module"])._module(7, False)
        mod.add_constant(torch.empty(4), torch.randn(8)[::2])


def test_strides_wildcards_and_unwrap(probe_module):
    wide = torch.randn(6, 12)
    assert probe_module.strides(wide[:, :5]) == 12 * 1000 + 5  # -1 rows, symbolic row stride
    with pytest.raises(ValueError, match=r"x: stride of dimension 1 expected 1, got 6"):
        probe_module.strides(torch.randn(5, 6).t())
    with pytest.raises(ValueError, match=r"x: dtype expected one of \[float32\], got int64"):
        probe_module.strides(torch.zeros(2, 2, dtype=torch.int64))
    with pytest.raises(RuntimeError, match="symbolic size 'never_matched' was never matched"):
        probe_module.unbound()


def test_dtype_symbol_names_origin(probe_module):
    assert probe_module.pair(torch.randn(3, 4), torch.randn(3, 4)) == 3
    with pytest.raises(ValueError, match=r"b: dtype expected float32 \(same as a\), got int32"):
        probe_module.pair(torch.randn(3, 4), torch.ones(3, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"b: dimension 1 expected size 4, got 5"):
        probe_module.pair(torch.randn(3, 4), torch.randn(3, 5))


def test_runtime_check_and_irange(probe_module):
    assert probe_module.check_small(3) == 3
    with pytest.raises(RuntimeError, match="value 12 must be < 10"):
        probe_module.check_small(12)
    assert probe_module.range_sum(3, 7) == 3 + 4 + 5 + 6
    assert probe_module.range_sum(5, 2) == 0


def test_kv_kernel_names_the_mismatching_argument():
    k = [torch.randn(12, 2, 4) for _ in range(3)]
    regions = torch.tensor([[t.data_ptr() for t in k], [3 * 2 * 4 * 4] * 3, [0, 96, 192]], dtype=torch.int64)
    ids = torch.zeros(2, 1, dtype=torch.int64)
    with pytest.raises(ValueError) as e:
        kvt._module(False).device_to_host(regions, torch.zeros(5, 200, dtype=torch.uint8), ids, 4, 0, -1)
    assert "region 2 (chunk 96 bytes at host offset 192) does not fit a host page of 200 bytes" in str(e.value)
    with pytest.raises(ValueError, match=r"host_buf: dtype expected one of \[uint8\], got float32"):
        kvt._module(False).device_to_host(regions, torch.zeros(5, 288), ids, 4, 0, -1)
    with pytest.raises(ValueError, match=r"regions: dimension 0 expected size 3, got 2"):
        kvt._module(False).device_to_host(regions[:2], torch.zeros(5, 288, dtype=torch.uint8), ids, 4, 0, -1)
