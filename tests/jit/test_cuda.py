"""CUDA sources: compile-only wherever nvcc exists (CI); run against torch where a GPU exists."""
from __future__ import annotations

import pytest

from tests.jit.conftest import requires_cuda, requires_nvcc
from tests.jit.kv_pools import gqa_transfer, host_bytes
from tierlm.jit import build_jit


@requires_nvcc
def test_cuda_sources_compile():
    """All CUDA sources compile with nvcc (sm_90) and link; nothing is loaded or run."""
    entry = build_jit("cuda_compile_check", "4", cuda_files=["add_constant.cuh", "kv_transfer.cuh", "kv_layer_dma.cuh"],
                      cuda_wrappers=[
        ("add_constant", "tierlm_kernels::add_constant_cuda<3>"),
        ("layer_h2d_dma", "tierlm_kernels::kv_layer_h2d_dma"),
        ("pages_d2h_dma", "tierlm_kernels::kv_pages_d2h_dma"),
        ("device_to_host", "tierlm_kernels::kv_device_to_host_cuda<4>"),
        ("host_to_device", "tierlm_kernels::kv_host_to_device_cuda<4>")], cuda_arch="9.0")
    assert (entry.path / "cuda_compile_check.so").stat().st_size > 0
    assert entry.factors["nvcc"] and entry.factors["target"].startswith("sm90-")


@requires_cuda
def test_add_constant_cuda_on_a_side_stream():
    import torch
    from tierlm.jit.add_constant import add_constant
    x = torch.randint(-1000, 1000, (100_003,), dtype=torch.int32, device="cuda")
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        y = add_constant(x * 2, 5)  # the kernel must order after x * 2 on stream s
    s.synchronize()
    assert torch.equal(y, x * 2 + 5)
    with pytest.raises(ValueError, match=r"src: dtype expected one of \[int32\], got float32|dst: dtype"):
        add_constant(torch.randn(4, device="cuda"), 1)


@requires_cuda
@pytest.mark.parametrize("page_size", [16, 5])
def test_kv_transfer_cuda_matches_torch(page_size):
    import torch
    L, H, D = 4, 3, 24 if page_size == 16 else 7  # 7: not 16-byte aligned -> narrower vectors
    shape = (37 * page_size, H, D)
    k = [torch.randn(shape, device="cuda", dtype=torch.bfloat16) for _ in range(L)]
    v = [torch.randn(shape, device="cuda", dtype=torch.bfloat16) for _ in range(L)]
    host = torch.randn((29, L, 2, page_size, H, D)).bfloat16().pin_memory()
    dev_ids, host_ids = torch.randperm(37)[:19].tolist(), torch.randperm(29)[:19].tolist()
    ref = host.clone().pin_memory()
    gqa_transfer(k, v, host, "jit").device_to_host(dev_ids, host_ids)
    gqa_transfer(k, v, ref, "torch").device_to_host(dev_ids, host_ids)
    torch.cuda.synchronize()
    assert torch.equal(host, ref)
    k2, v2 = [t.clone() for t in k], [t.clone() for t in v]
    host.copy_(torch.randn(host.shape).bfloat16())
    gqa_transfer(k, v, host, "jit").host_to_device(dev_ids, host_ids[::-1])
    gqa_transfer(k2, v2, host, "torch").host_to_device(dev_ids, host_ids[::-1])
    torch.cuda.synchronize()
    assert all(torch.equal(a, b) for a, b in zip(k + v, k2 + v2))


@requires_cuda
def test_kv_transfer_cuda_rejects_pageable_host():
    import torch
    from tierlm.jit import kv_transfer as kvt
    k = [torch.randn(32, 2, 8, device="cuda")]
    host = torch.randn(2, 1, 2, 16, 2, 8)
    with pytest.raises(ValueError, match="pinned"):
        gqa_transfer(k, k, host, "jit")
    t = gqa_transfer(k, k, host.pin_memory(), "jit")
    ids = torch.zeros(2, 1, dtype=torch.int64, device="cuda")
    with pytest.raises(ValueError, match="host_buf must be pinned"):
        kvt._module(True).device_to_host(t._table, host_bytes(host), ids, t.num_device_pages, 0, 0, 0, -1)


@requires_cuda
def test_kv_transfer_cuda_layer_ranges_grid_cap_and_device_staging():
    """Layer-by-layer loads with a capped grid, and a device staging buffer as the "host" side, match torch."""
    import torch
    L, H, D, ps = 5, 2, 64, 16
    k = [torch.randn((23 * ps, H, D), device="cuda", dtype=torch.float16) for _ in range(L)]
    v = [torch.randn((23 * ps, H, D), device="cuda", dtype=torch.float16) for _ in range(L)]
    host = torch.randn((17, L, 2, ps, H, D)).half().pin_memory()
    dev_ids, host_ids = torch.randperm(23)[:11].tolist(), torch.randperm(17)[:11].tolist()
    k2, v2 = [t.clone() for t in k], [t.clone() for t in v]
    capped = gqa_transfer(k, v, host, "jit", max_blocks=3)
    ids = capped.page_ids(dev_ids, host_ids)
    for layer in range(L):
        capped.copy(ids, False, range(layer, layer + 1))
    gqa_transfer(k2, v2, host, "torch").host_to_device(dev_ids, host_ids)
    torch.cuda.synchronize()
    assert all(torch.equal(a, b) for a, b in zip(k + v, k2 + v2))
    staging = torch.zeros((11, L, 2, ps, H, D), device="cuda", dtype=torch.float16)
    gqa_transfer(k, v, staging, "jit").device_to_host(dev_ids, list(range(11)))
    torch.cuda.synchronize()
    assert torch.equal(staging.cpu(), host[host_ids])
    with pytest.raises(ValueError, match="layers must be a contiguous range"):
        capped.copy(ids, False, range(0, L + 1))
