"""Start-up helpers: the warm-up request leaves no trace; the start-up report counts what was compiled."""
from __future__ import annotations

from tests.conftest import CPU_OPTS
from tierlm.config import EngineConfig
from tierlm.engine import startup
from tierlm.engine.engine import Engine
from tierlm.kvcache.dma import DIRECT_MIN_PAGES
from tierlm.sampling_params import SamplingParams


def test_warm_up_leaves_no_cache_entry_or_counter(tiny_qwen3):
    engine = Engine(EngineConfig(model=str(tiny_qwen3), **CPU_OPTS))
    startup.warm_up(engine)
    stats = engine.stats()
    assert stats["kv_used_tokens"] == 0 and stats["kv_cached_tokens"] == 0
    assert stats["generated_tokens_total"] == 0 and stats["requests_total"] == 0
    assert not engine.has_unfinished()
    engine.kv.check_no_leak(engine.live_pages())


def test_warm_up_runs_a_mixed_step_when_mixed_steps_are_on(tiny_qwen3):
    engine = Engine(EngineConfig(model=str(tiny_qwen3), enable_mixed_chunk=True, **CPU_OPTS))
    modes, schedule = [], engine.scheduler.schedule

    def spy():
        batch, refused = schedule()
        modes.append(batch and batch.mode)
        return batch, refused

    engine.scheduler.schedule = spy
    startup.warm_up(engine)
    assert "mixed" in modes
    stats = engine.stats()
    assert stats["kv_used_tokens"] == 0 and stats["kv_cached_tokens"] == 0 and stats["requests_total"] == 0
    assert not engine.has_unfinished()
    engine.kv.check_no_leak(engine.live_pages())


def test_cpu_start_runs_the_host_warm_up_and_leaves_no_trace(tiny_qwen3, monkeypatch):
    ran = []
    real = startup.run_aborted
    monkeypatch.setattr(startup, "run_aborted", lambda engine, prompts, *a, **k: ran.append(list(prompts))
                        or real(engine, prompts, *a, **k))
    engine = Engine(EngineConfig(model=str(tiny_qwen3), seed=3, **CPU_OPTS))
    assert ran == [["__warmup__"]]
    stats = engine.stats()
    assert stats["kv_used_tokens"] == 0 and stats["kv_cached_tokens"] == 0
    assert stats["generated_tokens_total"] == 0 and stats["requests_total"] == 0 and not engine.has_unfinished()
    engine.kv.check_no_leak(engine.live_pages())
    # the engine's random stream is where an engine without the warm-up starts it: unseeded draws alike
    monkeypatch.setattr(startup, "warm_up_host", lambda engine: None)
    cold = Engine(EngineConfig(model=str(tiny_qwen3), seed=3, **CPU_OPTS))
    params = SamplingParams(temperature=1.0, max_tokens=12, ignore_eos=True, detokenize=False)
    tokens: list[list[int]] = [[], []]
    for e, got in zip((engine, cold), tokens):
        e.add_request("a", [5, 6, 7, 8, 9], params)
        while e.has_unfinished():
            got += [t for out in e.step() for t in out.new_token_ids]
    assert tokens[0] == tokens[1] and len(tokens[0]) == 12


def test_no_host_warm_up_where_triton_interprets_the_kernels(tiny_qwen3, monkeypatch):
    ran = []
    monkeypatch.setattr(startup, "warm_up_host", lambda engine: ran.append("host"))
    Engine(EngineConfig(model=str(tiny_qwen3), **CPU_OPTS)).close()
    assert ran == ["host"]
    monkeypatch.setattr(startup, "interpreted", lambda: True)
    Engine(EngineConfig(model=str(tiny_qwen3), **CPU_OPTS)).close()
    assert ran == ["host"]


def test_start_up_requests_ask_no_store(tiny_qwen3, tmp_path):
    engine = Engine(EngineConfig(model=str(tiny_qwen3), enable_hicache=True, kv_store=f"file://{tmp_path}/l3",
                                 **CPU_OPTS))
    try:
        asked, start = [], engine.kv.prefetcher.start
        engine.kv.prefetcher.start = lambda rid, *a: asked.append(rid) or start(rid, *a)
        params = SamplingParams(temperature=0.0, max_tokens=4, ignore_eos=True, detokenize=False)
        startup.run_aborted(engine, {"__warmup__": list(range(3, 20))}, params, tokens=2)
        assert asked == [] and engine.stats()["tiers"]["prefetch"]["probes"] == 0
        engine.add_request("user", list(range(3, 20)), params)
        while engine.has_unfinished():
            engine.step()
        assert asked == ["user"]
    finally:
        engine.close()


def test_compiled_artifacts_names_kernel_dirs_and_what_compiled_since(tmp_path, monkeypatch):
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))
    assert startup.compiled_artifacts() == {}
    (tmp_path / "KERNELHASH1").mkdir()
    (tmp_path / "KERNELHASH1" / "_rmsnorm_kernel.cubin").write_bytes(b"x")
    (tmp_path / "KERNELHASH1" / "_rmsnorm_kernel.json").write_text("{}")
    (tmp_path / "stray-file").write_text("x")
    before = startup.compiled_artifacts()
    assert before == {"KERNELHASH1": "_rmsnorm_kernel"}
    (tmp_path / "KERNELHASH2").mkdir()  # Triton's launcher module: no kernel
    (tmp_path / "KERNELHASH2" / "__triton_launcher.cpython-312-x86_64-linux-gnu.so").write_bytes(b"x")
    (tmp_path / "KERNELHASH3").mkdir()
    (tmp_path / "KERNELHASH3" / "_extend_kernel.cubin").write_bytes(b"x")
    (tmp_path / "KERNELHASH4").mkdir()  # still compiling: no binary yet
    assert startup.compiled_since(before) == ["_extend_kernel"]
    assert startup.compiled_since(startup.compiled_artifacts()) == []


def test_eager_cpu_start_opens_no_aot_tree_and_reports_no_compilation(tiny_qwen3):
    engine = Engine(EngineConfig(model=str(tiny_qwen3), **CPU_OPTS))
    assert engine.worker.runner.aot is None and engine.worker.runner.forward_model is engine.worker.runner.model
    s = engine.startup
    assert s["compilations"] == s["dynamo_graphs"] == s["new_kernels"] == 0 and s["compile"] is False
    assert "aot_key" not in s and engine.info()["compilations"] == 0


def test_prefill_calibration_seeds_the_cost_model_and_leaves_no_trace(tiny_qwen3, tmp_path):
    engine = Engine(EngineConfig(model=str(tiny_qwen3), enable_hicache=True, kv_store=f"file://{tmp_path}/l3",
                                 **CPU_OPTS))
    try:
        rate = startup.calibrate_prefill(engine, tokens=64)
        cost = engine.kv.cost.snapshot()
        assert rate and cost["prefill_samples"] == 1 and abs(cost["prefill_tokens_per_s"] - rate) < 1e-6 * rate
        engine.kv.flush()
        stats = engine.stats()
        assert stats["kv_cached_tokens"] == 0 and not engine.has_unfinished()
        assert stats["tiers"]["L3"]["store"]["pages_written"] == 0 and stats["tiers"]["backups"]["pages"] == 0
        engine.kv.check_no_leak(engine.live_pages())
    finally:
        engine.close()


def test_warm_tiers_copies_pages_both_ways_and_leaves_no_trace(tiny_qwen3):
    engine = Engine(EngineConfig(model=str(tiny_qwen3), enable_hicache=True, hicache_ratio=2, **CPU_OPTS))
    kv = engine.kv
    free, host_free = kv.allocator.num_free, kv.host_allocator.num_free
    pages = kv.allocator.alloc(DIRECT_MIN_PAGES + 1)  # free pages with known bytes: warm_tiers takes them next
    kv.allocator.free(pages)
    pool = engine.worker.pool
    slots = slice(pages[0] * pool.page_size, (pages[-1] + 1) * pool.page_size)
    for t in pool["k"]:
        t[slots].fill_(3.0)
    backups, backup = [], kv.io.backup
    kv.io.backup = lambda dev, host, *a: backups.append((list(dev), list(host))) or backup(dev, host, *a)
    loads, load = [], kv.io.load
    kv.io.load = lambda host, dev, overlap=0: loads.append((host, dev, overlap)) or load(host, dev, overlap)
    startup.warm_tiers(engine)
    # a run consecutive on both sides (the direct DMA path on CUDA), then one page (the staging path)
    assert [(d, len(h)) for d, h in backups] == [(pages[:-1], DIRECT_MIN_PAGES), (pages[-1:], 1)]
    assert backups[0][1] == list(range(backups[0][1][0], backups[0][1][0] + DIRECT_MIN_PAGES))
    host = engine.worker.host.buffer
    assert all((host[h] != 0).any() for _, hs in backups for h in hs)  # every page went to host memory
    assert [(d, o > 0) for _, d, o in loads] == [(pages, False), (pages, True)]  # back by both load paths
    assert all(float(t[slots].min()) == 3.0 for t in pool["k"])
    assert kv.allocator.num_free == free and kv.host_allocator.num_free == host_free
    kv.poll()  # what the first schedule does: the warm-up loads must not reach the cost model
    assert kv.metrics.tiers["L2"]["seconds"] == 0 and kv.cost.loads["L2"].samples == 0
    kv.check_no_leak()
    engine.close()


def record_passes(engine: Engine) -> list[tuple[str, int]]:
    """(mode, requests) of every pass the engine's scheduler makes from now on, appended as they come."""
    passes, schedule = [], engine.scheduler.schedule

    def spy():
        batch, refused = schedule()
        if batch is not None:
            passes.append((batch.mode, len(batch.reqs)))
        return batch, refused

    engine.scheduler.schedule = spy
    return passes


def test_warm_up_prefills_a_burst_wider_than_a_captured_pass_and_leaves_no_trace(tiny_qwen3):
    from tierlm.engine.mixed_graph import MAX_CHUNKS
    engine = Engine(EngineConfig(model=str(tiny_qwen3), **CPU_OPTS))
    passes = record_passes(engine)
    startup.warm_up(engine)
    assert ("prefill", MAX_CHUNKS + 1) in passes and ("decode", MAX_CHUNKS + 1) in passes
    stats = engine.stats()
    assert stats["kv_used_tokens"] == 0 and stats["kv_cached_tokens"] == 0 and stats["requests_total"] == 0
    assert not engine.has_unfinished()
    engine.kv.check_no_leak(engine.live_pages())


def test_warm_up_burst_keeps_within_the_running_request_limit(tiny_qwen3):
    engine = Engine(EngineConfig(model=str(tiny_qwen3), max_running_requests=4, **CPU_OPTS))
    passes = record_passes(engine)
    startup.warm_up(engine)
    assert max(n for _, n in passes) == 4 and not engine.has_unfinished()
