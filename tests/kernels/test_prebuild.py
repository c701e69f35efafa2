"""Building a tuner's kernel variants on a pool of threads before it times them (`kernels.prebuild`)."""
from __future__ import annotations

import threading

import pytest
import torch

from tierlm.kernels import prebuild as pb


def test_compile_threads_from_the_environment(caplog):
    assert pb.compile_threads({pb.ENV: "3"}) == 3
    assert pb.compile_threads({pb.ENV: " 1 "}) == 1
    default = pb.compile_threads({})
    assert 1 <= default <= pb.MAX_THREADS
    for bad in ("0", "-2", "four", "2.5"):
        with caplog.at_level("WARNING", logger=pb.__name__):
            assert pb.compile_threads({pb.ENV: bad}) == default
        assert pb.ENV in caplog.text and repr(bad) in caplog.text
        caplog.clear()


def test_every_launch_once_the_first_alone_failures_counted():
    """Each launch runs exactly once; the first finishes before any other starts (it builds what all share);
    the others run on the pool's threads; a launch that raises is counted and the rest still run."""
    lock, events, first_done = threading.Lock(), [], threading.Event()

    def launch(i: int):
        def run():
            with lock:
                events.append((i, first_done.is_set(), threading.current_thread().name))
            if i == 0:
                first_done.set()
            if i in (3, 5):
                raise RuntimeError("this GPU cannot build it")
        return run

    failed = pb.prebuild([launch(i) for i in range(8)], torch.device("cpu"), threads=3)
    assert failed == 2
    assert sorted(i for i, _, _ in events) == list(range(8))
    assert events[0][0] == 0
    assert all(done for i, done, _ in events if i != 0)
    assert all(name.startswith("tierlm-build") for i, _, name in events if i != 0)


@pytest.mark.parametrize("threads, launches", [(1, 4), (4, 1)])
def test_nothing_runs_without_a_pool(threads, launches):
    """One thread (`TIERLM_COMPILE_THREADS=1`) or one launch: the tuner builds each variant as it times it."""
    ran = []
    assert pb.prebuild([lambda: ran.append(1)] * launches, torch.device("cpu"), threads=threads) == 0
    assert ran == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gemv_variants_built_in_threads_compute_right():
    """GEMV launches of several variants, first run from the pool's threads on the caller's device, give the
    torch result (the threads launch on the caller's current device, not on device 0 by default)."""
    from tierlm.kernels.gemv import GemvConfig, gemv

    dev = torch.device("cuda", torch.cuda.current_device())
    gen = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(2, 1024, generator=gen, device=dev).to(torch.bfloat16)
    w = (torch.randn(768, 1024, generator=gen, device=dev) * 0.02).to(torch.bfloat16)
    configs = [GemvConfig(n, k, 4) for n, k in ((2, 1024), (4, 512), (8, 1024))] + [GemvConfig(1, 2048, 4)]
    outs = {}

    def launch(cfg):
        return lambda: outs.__setitem__(cfg, gemv(x, w, None, cfg))

    assert pb.prebuild([launch(c) for c in configs], torch.device("cuda"), threads=4) == 0
    ref = (x.float() @ w.float().t())
    for cfg in configs:
        assert outs[cfg].device == dev
        torch.testing.assert_close(outs[cfg].float(), ref, atol=2e-2, rtol=2e-2)
