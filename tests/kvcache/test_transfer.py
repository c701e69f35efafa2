"""`PageTransfer`: backend resolution and the per-step choice of the load path."""
from __future__ import annotations

import pytest
import torch

from tierlm.kvcache.host_pool import HostKVPool
from tierlm.kvcache.layout import KVLayout
from tierlm.kvcache.pool import KVPool
from tierlm.kvcache.transfer import OVERLAP_TOKENS, PageTransfer, choose_backend, resolve_backend

CPU = torch.device("cpu")


def test_resolve_backend():
    assert resolve_backend("auto", CPU) == "torch"
    assert resolve_backend("torch", CPU) == "torch"
    with pytest.raises(ValueError, match="--hicache-io-backend: unknown backend 'fast'"):
        resolve_backend("fast", CPU)
    with pytest.raises(ValueError, match="--hicache-io-backend dma: copy-engine transfers need a CUDA device"):
        resolve_backend("dma", CPU)


def _choose(name, cuda, jit=None, triton=None):
    asked = []

    def missing(what, why):
        def ask():
            asked.append(what)
            return why
        return ask
    return choose_backend(name, cuda, missing("jit", jit), missing("triton", triton)), asked


def test_choose_backend_on_cuda(caplog):
    # our kernels build: every name stands for itself, and Triton is never asked about
    for name in ("auto", "jit", "dma"):
        assert _choose(name, True) == (name, ["jit"])
    assert _choose("torch", True) == ("torch", [])
    # they do not: auto copies with the Triton kernel (asynchronous, like ours), and says so once
    with caplog.at_level("WARNING"):
        assert _choose("auto", True, jit="no nvcc") == ("triton", ["jit", "triton"])
    assert "unavailable (no nvcc); copying with the Triton kernel" in caplog.text
    # a name the user chose is never replaced by another
    for name in ("jit", "dma"):
        with pytest.raises(ValueError, match=f"--hicache-io-backend {name}: the JIT page-transfer kernels are "
                                             "unavailable: no nvcc"):
            _choose(name, True, jit="no nvcc")
    assert _choose("triton", True, jit="no nvcc") == ("triton", ["triton"])
    with pytest.raises(ValueError, match="--hicache-io-backend triton: the Triton copy kernel cannot run: no "
                                         "module named triton"):
        _choose("triton", True, triton="no module named triton")
    # neither: synchronous torch copies, with a warning that says what that costs
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert _choose("auto", True, jit="no nvcc", triton="none")[0] == "torch"
    assert "slower than without --enable-hicache" in caplog.text


def test_choose_backend_on_cpu():
    assert _choose("auto", False) == ("torch", [])
    assert _choose("jit", False) == ("jit", ["jit"])  # the C++ kernel runs on the CPU too
    with pytest.raises(ValueError, match="--hicache-io-backend triton: the Triton copy kernel cannot run: it "
                                         "needs a CUDA device"):
        _choose("triton", False)


def test_auto_loads_by_kernel_only_beside_a_large_prefill():
    layout = KVLayout.gqa(2, 1, 4, torch.float32)
    pool = KVPool(layout, num_pages=9, page_size=4, device=CPU)
    t = PageTransfer(pool, HostKVPool(8, layout, 4), "torch")
    assert not t.use_dma_load(0)
    t.backend = "dma"
    assert t.use_dma_load(0) and t.use_dma_load(10 * OVERLAP_TOKENS)
    t.backend = "auto"
    assert t.use_dma_load(OVERLAP_TOKENS - 1) and not t.use_dma_load(OVERLAP_TOKENS)
    host = t.host.buffer.view(torch.float32).view(8, 2, 2, 4, 1, 4)  # [pages, layers, k|v, tokens, heads, dim]
    host.copy_(torch.randn_like(host))
    assert t.start_load([3, 5], [1, 2]) is None  # CPU: synchronous, nothing to wait for
    assert torch.equal(pool["k"][1].view(-1, 4, 1, 4)[2], host[5, 1, 0])
    assert t.finished_loads()[0][0] == 2 * t.host.bytes_per_page


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("backend", ["dma", "jit"])
def test_a_load_is_timed_without_the_compute_queued_before_it(backend):
    layout = KVLayout.gqa(2, 8, 128, torch.bfloat16)
    pool = KVPool(layout, num_pages=9, page_size=16, device=torch.device("cuda"))
    t = PageTransfer(pool, HostKVPool(8, layout, 16, pin=True), backend)
    t.start_load([1], [1])  # first use: builds and warms the copy paths
    t.wait_loads()
    t.finished_loads()
    busy = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    busy[0].record()
    torch.cuda._sleep(200_000_000)  # compute queued before the load, far longer than copying two pages
    busy[1].record()
    loads = t.start_load([3, 5], [1, 2])
    loads.wait_all()
    torch.cuda.synchronize()
    [(nbytes, seconds)] = t.finished_loads()
    assert nbytes == 2 * t.host.bytes_per_page
    assert 0 < seconds < busy[0].elapsed_time(busy[1]) / 1e3 / 10


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("backend", ["auto", "jit"])
def test_queueing_copies_does_not_wait_on_the_host_for_the_work_ahead_of_them(backend):
    # page ids uploaded from pageable memory would make each queue call wait for its stream to drain: the
    # backup for the forward ahead of it, the load likewise (the test can fail: the sleep is still running
    # when both calls have returned only if neither waited)
    layout = KVLayout.gqa(2, 8, 128, torch.bfloat16)
    pool = KVPool(layout, num_pages=9, page_size=16, device=torch.device("cuda"))
    host = HostKVPool(8, layout, 16, pin=True)
    t = PageTransfer(pool, host, backend)
    t.queue_backup([1], [1]).synchronize()  # first use: builds and warms the copy paths
    t.start_load([1], [2])
    torch.cuda.synchronize()
    for name in ("k", "v"):
        for x in pool[name]:
            x.fill_(3.0)
    host.buffer[5:7].fill_(7)
    torch.cuda._sleep(400_000_000)  # the forward the copies are ordered after
    ahead = torch.cuda.current_stream().record_event()
    done = t.queue_backup([2, 3, 4], [1, 2, 3])
    loads = t.start_load([5, 6], [7, 8])
    assert not ahead.query()  # both calls returned while the work ahead of them still ran
    done.synchronize()
    loads.wait_all()
    torch.cuda.synchronize()
    assert bool(torch.all(host.buffer[1:4].view(torch.bfloat16) == 3.0))  # the backup's bytes
    assert all(bool(torch.all(r[7:9] == 7)) for r in pool.regions())  # the load's
