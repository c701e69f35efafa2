"""Tensor parallelism on CPU (gloo, two rank processes): the same greedy tokens as one device, whatever tier
served the KV, and no hang or mix when one rank's L3 store fails or stalls."""
from __future__ import annotations

import time

import pytest

from tests.conftest import CPU_OPTS
from tierlm import LLM, SamplingParams
from tierlm.engine import startup

PROMPTS = [
    "the quick brown fox jumps over the lazy dog",
    "the quick brown fox jumps over the lazy dog while a small cache keeps every page warm",
    "paris is the capital of france and berlin is the capital of",
    "hello world this is a tiny language model trained on nothing at all",
    "x",
]
GREEDY = SamplingParams(temperature=0, max_tokens=10, ignore_eos=True)
ARCHS = ("llama", "qwen2", "qwen3")


def tokens(llm: LLM, prompts=PROMPTS) -> list[list[int]]:
    return [o.token_ids for o in llm.generate(prompts, GREEDY)]


@pytest.fixture(scope="module")
def references(tiny_models):
    out = {}
    for arch in ARCHS:
        llm = LLM(str(tiny_models[arch]), enable_prefix_cache=False, **CPU_OPTS)
        out[arch] = tokens(llm)
        llm.close()
    return out


def ranks_idle(llm: LLM) -> None:
    ranks = llm.engine.worker.rank_figures(wait=True)
    assert [r["rank"] for r in ranks] == [0, 1]
    assert all(r.get("io_idle", True) for r in ranks), ranks


# each architecture's first engine also runs one storage write policy: the restart must find every rank's
# part of the pages whether they were written through, at shutdown (write_back) or either way (auto)
STORAGE = {"llama": "write_through", "qwen2": "write_back", "qwen3": "auto"}


@pytest.mark.parametrize("arch", ARCHS)
def test_tp2_matches_tp1_from_every_tier(tiny_models, references, arch, tmp_path):
    store = f"file://{tmp_path / 'l3'}"
    llm = LLM(str(tiny_models[arch]), tp_size=2, kv_store=store, hicache_storage_write_policy=STORAGE[arch],
              **CPU_OPTS)
    engine = llm.engine
    try:
        assert engine.info()["tp_size"] == 2
        startup.warm_tiers(engine)  # what a CUDA start-up does, here through every rank: no trace left
        engine.kv.check_no_leak(engine.live_pages())
        assert tokens(llm) == references[arch]  # cold
        assert tokens(llm) == references[arch]  # device prefix cache
        assert engine.stats()["tier_hits"]["L1"]["tokens"] > 0
        engine.kv.drop_device_cache()  # forced eviction: the prefixes live on in every rank's host pool
        assert tokens(llm) == references[arch]
        assert engine.stats()["tier_hits"]["L2"]["tokens"] > 0
        engine.kv.check_no_leak(engine.live_pages())
        engine.kv.flush()
        ranks_idle(llm)
    finally:
        llm.close()
    # a restarted engine finds every rank's part of the pages in the file store
    llm = LLM(str(tiny_models[arch]), tp_size=2, kv_store=store, hicache_prefetch_policy="wait_complete",
              hicache_prefetch_threshold=4, **CPU_OPTS)
    try:
        assert tokens(llm) == references[arch]
        hits = llm.engine.stats()["tier_hits"]["L3"]["tokens"]
        assert hits > 0, llm.engine.stats()["tier_hits"]
        llm.engine.kv.check_no_leak(llm.engine.live_pages())
    finally:
        llm.close()


@pytest.mark.parametrize("mode", ["fail", "stall"])
@pytest.mark.timeout(120)
def test_one_rank_l3_fault_means_recompute_on_all_ranks(tiny_models, references, tmp_path, mode):
    model = str(tiny_models["qwen3"])
    d = tmp_path / "l3"
    writer = LLM(model, tp_size=2, kv_store=f"file://{d}", **CPU_OPTS)
    assert tokens(writer) == references["qwen3"]
    writer.close()
    gate = tmp_path / "stalled"  # rank 1's reads stall while this file exists
    gate.touch()
    faulty = f"tests.engine.tp_stores:OneRankFaultyStore?dir={d}&mode={mode}&rank=1&gate={gate}"
    llm = LLM(model, tp_size=2, kv_store=faulty, hicache_prefetch_policy="timeout", hicache_prefetch_timeout=0.2,
              hicache_prefetch_threshold=4, **CPU_OPTS)
    try:
        t0 = time.monotonic()
        assert tokens(llm) == references["qwen3"]
        llm.engine.kv.idle_wait(0.05)  # an idle scheduler's wait must not reach the stalled rank's step loop
        assert tokens(llm) == references["qwen3"]
        assert time.monotonic() - t0 < 30
        stats = llm.engine.stats()
        assert stats["tier_hits"]["L3"]["tokens"] == 0, stats["tier_hits"]  # no page from only one rank
        assert stats["tiers"]["L3"]["io_errors"] > 0 if mode == "fail" else True
        gate.unlink()
        llm.engine.kv.prefetcher.drain()  # the stalled read ends; its host pages come back
        llm.engine.kv.check_no_leak(llm.engine.live_pages())
        assert not llm.engine.kv.prefetcher.held_pages
    finally:
        llm.close()


def test_unshardable_models_are_refused_with_the_flag(tiny_models, tiny_qwen3_moe):
    with pytest.raises(ValueError, match="--tp-size 2: Qwen3MoeForCausalLM cannot be served tensor parallel"):
        LLM(str(tiny_qwen3_moe), tp_size=2, **CPU_OPTS)
    with pytest.raises(ValueError, match="--tp-size 3: the number of attention heads"):
        LLM(str(tiny_models["qwen3"]), tp_size=3, **CPU_OPTS)


@pytest.mark.timeout(180)
def test_random_workload_at_tp2_leaves_every_rank_at_baseline(tiny_qwen3, tmp_path):
    """Arrivals, aborts (what a client disconnect becomes), prefetches that time out on a stalled rank, and
    forced evictions, in a pool small enough to queue and evict: nothing leaks, and at the end every rank is
    idle and the pools are back to empty."""
    import random

    from tests.engine.random_workload import RandomWorkload
    from tierlm.config import EngineConfig
    from tierlm.engine.engine import Engine

    rng = random.Random(7)
    store = f"tests.engine.tp_stores:OneRankFaultyStore?dir={tmp_path / 'l3'}&mode=stall&rank=1&delay=0.3"
    engine = Engine(EngineConfig(model=str(tiny_qwen3), **{**CPU_OPTS, "kv_cache_gb": 0.0001}, tp_size=2,
                                 kv_store=store, hicache_ratio=3.0, hicache_prefetch_policy="timeout",
                                 hicache_prefetch_timeout=0.05, hicache_prefetch_threshold=4,
                                 max_prefill_tokens=rng.choice([7, 64]), max_running_requests=6, reserve_new_tokens=2))
    try:
        base_free = engine.kv.allocator.num_free
        work = RandomWorkload(engine, rng, shared_len=24, max_extra=12, max_tokens=24, max_live=10, p_arrive=0.35,
                              p_abort=0.06)

        def evict() -> None:
            if rng.random() < 0.04:
                engine.kv.drop_device_cache()
            if rng.random() < 0.03:
                engine.kv.drop_host_cache()  # later matches come from L3, through prefetches

        work.run(160, evict)
        engine.kv.prefetcher.drain()
        engine.kv.check_no_leak(engine.live_pages())
        assert engine.stats()["tiers"]["backups"]["pages"] > 0 and engine.kv.metrics.prefetch["started"] > 0
        # whichever lower-tier hits the random part made (they depend on when the stalled rank answers), a
        # prefix backed up to host memory is then served from it at TP 2
        before = engine.stats()["tier_hits"]["L2"]["tokens"]
        for rid in ("again-0", "again-1"):
            engine.add_request(rid, work.shared + [3, 1, 4, 1, 5], SamplingParams(
                temperature=0.0, max_tokens=2, ignore_eos=True, detokenize=False))
            while engine.has_unfinished():
                engine.step()
            engine.kv.drop_device_cache()
        assert engine.stats()["tier_hits"]["L2"]["tokens"] > before
        engine.kv.check_no_leak(engine.live_pages())
        engine.kv.drop_device_cache()
        engine.kv.drop_host_cache()
        assert engine.kv.allocator.num_free == base_free
        assert engine.kv.host_allocator.num_free == engine.kv.host_allocator.num_pages
        assert all(r["io_idle"] for r in engine.worker.rank_figures(wait=True))
    finally:
        engine.close()
