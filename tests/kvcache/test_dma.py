"""`DmaPageCopier`: staged copies equal direct ones (CPU here with the C++ kernel; CUDA where present)."""
from __future__ import annotations

import random

import pytest
import torch

from tests.jit.conftest import requires_cuda, requires_cxx
from tierlm.jit.kv_transfer import KVPageTransfer, byte_pages
from tierlm.kvcache.dma import DmaPageCopier, LayerwiseDmaLoader, host_runs, joint_runs


def test_host_runs_groups_consecutive_ids():
    assert host_runs([3, 4, 5, 9, 10, 2]) == [(0, 3, 3), (3, 9, 2), (5, 2, 1)]
    assert host_runs([]) == []


def test_joint_runs_need_both_sides_consecutive():
    # host order; a run breaks where either side jumps
    assert joint_runs([5, 6, 7, 1, 9, 8], [10, 11, 12, 3, 14, 13]) == [(1, 3, 1), (5, 10, 5)]
    assert joint_runs([5, 6, 7, 1, 20, 8], [10, 11, 12, 3, 14, 13]) == [(1, 3, 1), (5, 10, 4), (20, 14, 1)]
    assert joint_runs([4, 3], [1, 2]) == [(4, 1, 1), (3, 2, 1)]  # consecutive hosts, device order reversed
    assert joint_runs([], []) == []
    with pytest.raises(ValueError, match="2 device pages but 1 host pages"):
        joint_runs([1, 2], [3])


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
    assert dma.pages_direct + dma.pages_staged == 13
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


def _fake_d2h(regions, shift=0):
    """The direct page DMA's meaning in torch (`shift`: a wrong source page)."""
    def d2h(region0, table, host, runs):
        assert region0 is regions[0] and table.shape == (3, len(regions))
        for d, h, n in runs.tolist():
            for r, t in enumerate(regions):
                off = int(table[2, r])
                host[h:h + n, off:off + t.shape[1]] = t[d + shift:d + shift + n]
    return d2h


def test_direct_dma_self_check_catches_wrong_bytes(monkeypatch):
    import tierlm.kvcache.dma as dma
    made = []
    real = torch.randint

    def randint(*a, **kw):  # keep the scratch regions the check makes, for the fake copies
        made.append(real(*a, **kw))
        return made[-1]
    monkeypatch.setattr(torch, "randint", randint)
    cpu = torch.device("cpu")
    assert dma.direct_dma_fault(lambda *a: _fake_d2h(made)(*a), cpu) is None
    made.clear()
    assert "differ" in dma.direct_dma_fault(lambda *a: _fake_d2h(made, shift=1)(*a), cpu)
    made.clear()
    assert "differ" in dma.direct_dma_fault(lambda *a: None, cpu)  # copies nothing


def test_mover_self_check_catches_wrong_copies(monkeypatch):
    import tierlm.kvcache.dma as dma
    cpu = torch.device("cpu")
    assert dma.mover_fault("torch", cpu) is None
    real = dma.page_mover

    def lossy(*a, **kw):  # a mover whose backups lose their last page
        mover = real(*a, **kw)
        d2h = mover.device_to_host
        mover.device_to_host = lambda dev, host, layers=None: d2h(dev[:-1], host[:-1], layers)
        return mover
    monkeypatch.setattr(dma, "page_mover", lossy)
    assert "differ from torch indexing" in dma.mover_fault("torch", cpu)


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
@pytest.mark.parametrize("direct_min_pages", [8, 3, 0])
def test_backup_runs_go_straight_from_the_pool(direct_min_pages):
    """Runs of pages consecutive on both sides (long ones by a strided DMA per region, the rest through the
    staging buffer, in one call) land the bytes the torch reference does."""
    k, v, host, regions, sizes, host_bytes = _pools("cuda", layers=4, dev_pages=64, host_pages=48)
    ref = host.clone().pin_memory()
    dev_ids = list(range(5, 17)) + [40, 30, 31, 32, 33] + list(range(50, 60))  # runs of 12, 1, 4 and 10
    host_ids = list(range(2, 14)) + [20, 30, 31, 32, 33] + list(range(36, 46))
    page_bytes = host[0].numel() * host.element_size()
    dma = DmaPageCopier(regions, sizes, host_bytes, staging_bytes=3 * page_bytes, direct_min_pages=direct_min_pages)
    assert dma.direct_min_pages == direct_min_pages
    dma.device_to_host(dev_ids, host_ids)
    assert (dma.pages_direct, dma.pages_staged) == {8: (22, 5), 3: (26, 1), 0: (0, 27)}[direct_min_pages]
    KVPageTransfer(regions, ref.view(torch.uint8).view(48, -1), sizes, "torch").device_to_host(dev_ids, host_ids)
    torch.cuda.synchronize()
    assert torch.equal(host, ref)


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
