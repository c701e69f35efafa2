"""`DmaPageCopier`: staged copies equal direct ones (CPU here with the C++ kernel; CUDA where present)."""
from __future__ import annotations

import random

import pytest
import torch

from tests.jit.conftest import requires_cuda, requires_cxx
from tierlm.jit.kv_transfer import KVPageTransfer, byte_pages
from tierlm.kvcache.dma import DmaPageCopier, LayerwiseDmaLoader, host_runs


def test_host_runs_groups_consecutive_ids():
    assert host_runs([3, 4, 5, 9, 10, 2]) == [(0, 3, 3), (3, 9, 2), (5, 2, 1)]
    assert host_runs([]) == []


def _pools(device: str, layers=3, heads=2, dim=8, ps=4, dev_pages=40, host_pages=30):
    """GQA pools: per-layer K and V, a typed view of the page-first host pool, and the byte-level arguments
    the page movers take (regions in page-first order, regions per layer, the host bytes)."""
    k = [torch.randn((dev_pages * ps, heads, dim), device=device) for _ in range(layers)]
    v = [torch.randn((dev_pages * ps, heads, dim), device=device) for _ in range(layers)]
    host = torch.randn((host_pages, layers, 2, ps, heads, dim), pin_memory=device == "cuda")
    regions = [byte_pages(t, dev_pages) for pair in zip(k, v) for t in pair]
    return k, v, host, regions, [2] * layers, host.view(torch.uint8).view(host_pages, -1)


def _check_roundtrip(device: str, kernel: str = "jit") -> None:
    k, v, host, regions, sizes, host_bytes = _pools(device)
    rng = random.Random(0)
    dev_ids = rng.sample(range(40), 13)
    host_ids = sorted(rng.sample(range(30), 13))  # mostly contiguous runs, plus gaps
    rng.shuffle(host_ids)
    page_bytes = host[0].numel() * host.element_size()
    dma = DmaPageCopier(regions, sizes, host_bytes, staging_bytes=5 * page_bytes,  # 5-page chunks: several rounds
                        kernel=kernel)
    assert dma.staging_pages == 5
    dma.device_to_host(dev_ids, host_ids)
    if device == "cuda":
        torch.cuda.synchronize()
    ps = host.shape[3]
    for d, h in zip(dev_ids, host_ids):
        for layer in range(3):
            assert torch.equal(host[h, layer, 0], k[layer][d * ps:(d + 1) * ps].cpu())
            assert torch.equal(host[h, layer, 1], v[layer][d * ps:(d + 1) * ps].cpu())
    before = [t.clone() for t in k + v]
    host.copy_(torch.randn_like(host))
    targets = rng.sample(range(40), 13)
    dma.host_to_device(targets, host_ids)
    if device == "cuda":
        torch.cuda.synchronize()
    for layer in range(3):
        for j, t in enumerate((k[layer], v[layer])):
            for d, h in zip(targets, host_ids):
                assert torch.equal(t[d * ps:(d + 1) * ps].cpu(), host[h, layer, j])
            untouched = [p for p in range(40) if p not in targets]
            ref = before[layer + 3 * j].view(40, ps, 2, 8)
            assert torch.equal(t.view(40, ps, 2, 8)[untouched].cpu(), ref[untouched].cpu())
    with pytest.raises(ValueError, match="device pages but"):
        dma.device_to_host([1, 2], [3])


@requires_cxx
def test_dma_copier_roundtrip_cpu():
    _check_roundtrip("cpu")


@requires_cuda
def test_dma_copier_roundtrip_cuda():
    _check_roundtrip("cuda")


@requires_cuda
def test_dma_copier_roundtrip_cuda_triton_gather():
    pytest.importorskip("triton")
    _check_roundtrip("cuda", "triton")


@requires_cuda
def test_layerwise_dma_loader_matches_reference():
    """Layer-ordered DMA loads (several staging chunks, both buffers, two calls) land the right bytes, and
    each layer's event covers that layer."""
    k, v, host, regions, sizes, host_bytes = _pools("cuda", layers=4, dev_pages=64, host_pages=48)
    ref_k, ref_v = [t.clone() for t in k], [t.clone() for t in v]
    copy, scatter = torch.cuda.Stream(), torch.cuda.Stream()
    layer_bytes = host[0, 0].numel() * host.element_size()
    loader = LayerwiseDmaLoader(regions, sizes, host_bytes, copy, scatter,
                                staging_bytes=7 * layer_bytes)  # 7-page chunks
    rng = random.Random(1)
    for _ in range(2):
        dev_ids, host_ids = rng.sample(range(64), 20), rng.sample(range(48), 20)
        with torch.cuda.stream(scatter):
            events = loader.load(dev_ids, host_ids)
        assert len(events) == 4
        torch.cuda.current_stream().wait_event(events[-1])
        ref_regions = [byte_pages(t, 64) for pair in zip(ref_k, ref_v) for t in pair]
        KVPageTransfer(ref_regions, host_bytes, sizes, "torch").host_to_device(dev_ids, host_ids)
        torch.cuda.synchronize()
        assert all(torch.equal(a, b) for a, b in zip(k + v, ref_k + ref_v))
