"""CPU JIT kernels match torch references on random data, odd sizes included."""
from __future__ import annotations

import pytest
import torch

from tests.jit.conftest import requires_cxx
from tests.jit.kv_pools import gqa_regions, gqa_transfer, host_bytes
from tierlm.jit import kv_transfer as kvt
from tierlm.jit.add_constant import add_constant

pytestmark = requires_cxx


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.float32])
@pytest.mark.parametrize("n", [1, 7, 1001])
def test_add_constant_cpu_matches_torch(dtype, n):
    g = torch.Generator().manual_seed(n)
    src = (torch.randn(n, generator=g) * 1000).to(dtype)
    assert src.abs().sum() > 0
    torch.testing.assert_close(add_constant(src, 7), src + 7)


def _pools(layers=5, heads=3, head_dim=5, page_size=3, dev_pages=11, host_pages=9, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (dev_pages * page_size, heads, head_dim)
    k = [torch.randn(shape, generator=g).to(dtype) for _ in range(layers)]
    v = [torch.randn(shape, generator=g).to(dtype) for _ in range(layers)]
    host = torch.randn((host_pages, layers, 2, page_size, heads, head_dim), generator=g).to(dtype)
    return k, v, host


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("page_size,heads,head_dim", [(3, 3, 5), (16, 2, 8), (1, 1, 1)])
def test_kv_transfer_cpu_both_directions(dtype, page_size, heads, head_dim):
    k, v, host = _pools(heads=heads, head_dim=head_dim, page_size=page_size, dtype=dtype)
    dev_ids, host_ids = [7, 2, 10, 0, 5], [1, 8, 3, 6, 0]
    host_ref = host.clone()
    gqa_transfer(k, v, host, "jit").device_to_host(dev_ids, host_ids)
    gqa_transfer(k, v, host_ref, "torch").device_to_host(dev_ids, host_ids)
    assert torch.equal(host, host_ref)
    for d, h in zip(dev_ids, host_ids):  # the layout itself, independently of both backends
        for layer in range(5):
            assert torch.equal(host[h, layer, 0], k[layer][d * page_size:(d + 1) * page_size])
            assert torch.equal(host[h, layer, 1], v[layer][d * page_size:(d + 1) * page_size])
    untouched = [p for p in range(9) if p not in host_ids]
    _, _, fresh = _pools(heads=heads, head_dim=head_dim, page_size=page_size, dtype=dtype)
    assert torch.equal(host[untouched], fresh[untouched])

    host.copy_(torch.randn(host.shape).to(dtype))
    k2, v2 = [t.clone() for t in k], [t.clone() for t in v]
    gqa_transfer(k, v, host, "jit").host_to_device(dev_ids, host_ids[::-1])
    gqa_transfer(k2, v2, host, "torch").host_to_device(dev_ids, host_ids[::-1])
    assert all(torch.equal(a, b) for a, b in zip(k + v, k2 + v2))
    d, h = dev_ids[0], host_ids[-1]
    assert torch.equal(k[4][d * page_size:(d + 1) * page_size], host[h, 4, 0])


def test_kv_transfer_accepts_tensors_and_empty_batches():
    k, v, host = _pools()
    t = gqa_transfer(k, v, host, "jit")
    t.device_to_host(torch.tensor([3, 4], dtype=torch.int32), torch.tensor([0, 1]))
    assert torch.equal(host[1, 2, 1], v[2][12:15])
    before = host.clone()
    t.device_to_host([], [])
    assert torch.equal(host, before)


@pytest.mark.parametrize("backend", ["jit", "torch"])
def test_kv_transfer_rejects_bad_ids(backend):
    k, v, host = _pools()
    t = gqa_transfer(k, v, host, backend)
    with pytest.raises(ValueError, match=r"device_pages contains 11, out of range \[0, 11\)"):
        t.device_to_host([0, 11], [0, 1])
    with pytest.raises(ValueError, match=r"host_pages contains -1"):
        t.host_to_device([0, 1], [0, -1])
    with pytest.raises(ValueError, match="device_pages has 2 ids but host_pages has 1"):
        t.device_to_host([0, 1], [0])


def test_kv_transfer_rejects_mismatched_pools():
    k, v, host = _pools()
    regions = gqa_regions(k, v, 3)
    with pytest.raises(ValueError, match=r"regions\[5\]"):
        kvt.KVPageTransfer(regions[:5] + [regions[5][:6]] + regions[6:], host_bytes(host))
    with pytest.raises(ValueError, match="host_buf shape"):
        kvt.KVPageTransfer(regions, host_bytes(host[:, :4].contiguous()))
    with pytest.raises(ValueError, match="backend"):
        kvt.KVPageTransfer(regions, host_bytes(host), backend="cuda")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="do not partition"):
        kvt.KVPageTransfer(regions, host_bytes(host), [2, 2])


def test_kernel_bounds_check_runs_before_any_copy():
    """Called directly (bypassing Python's checks), the C++ side refuses bad ids and copies nothing."""
    k, v, host = _pools()
    t = gqa_transfer(k, v, host, "jit")
    before = host.clone()
    ids = torch.tensor([[1, 99], [0, 1]], dtype=torch.int64)
    with pytest.raises(ValueError, match=r"device_pages\[1\] = 99 is out of range \[0, 11\)"):
        kvt._module(False).device_to_host(t._table, host_bytes(host), ids, t.num_device_pages, 0, -1)
    assert torch.equal(host, before)


def test_jit_available_on_cpu():
    assert kvt.jit_available("cpu")


def test_kv_transfer_cpu_latent_layout():
    """A non-GQA pool (one latent buffer per layer, 576 wide) moves through the same kernel bit-exactly."""
    g = torch.Generator().manual_seed(3)
    lat = [torch.randn((11 * 4, 576), generator=g).bfloat16() for _ in range(3)]
    host = torch.zeros((7, 3 * 4 * 576 * 2), dtype=torch.uint8)
    regions = [kvt.byte_pages(t, 11) for t in lat]
    t = kvt.KVPageTransfer(regions, host, backend="jit")
    t.device_to_host([2, 9], [6, 0])
    for d, h in ((2, 6), (9, 0)):
        row = host[h].view(torch.bfloat16).view(3, 4, 576)
        assert all(torch.equal(row[layer], lat[layer][d * 4:(d + 1) * 4]) for layer in range(3))
    lat2 = [x.clone() for x in lat]
    t.host_to_device([5, 1], [0, 6])
    kvt.KVPageTransfer([kvt.byte_pages(x, 11) for x in lat2], host, backend="torch").host_to_device([5, 1], [0, 6])
    assert all(torch.equal(a, b) for a, b in zip(lat, lat2))
