"""Randomized engine workload in a tiny pool: admission queueing, retraction, chunking, aborts, overlap.
After every step no KV page is leaked or owned twice; every request ends exactly once."""
from __future__ import annotations

import random

import pytest

from tests.conftest import CPU_OPTS
from tests.engine.random_workload import RandomWorkload
from tierlm.config import EngineConfig
from tierlm.engine.engine import Engine


@pytest.mark.parametrize("seed, reserve", [(0, 0), (1, 1), (2, 3), (3, 2)])
def test_random_workload_keeps_kv_consistent(tiny_qwen3, seed, reserve):
    rng = random.Random(seed)
    engine = Engine(EngineConfig(model=str(tiny_qwen3), **{**CPU_OPTS, "kv_cache_gb": 0.0002},
                                 reserve_new_tokens=reserve, max_prefill_tokens=rng.choice([5, 64]),
                                 overlap_schedule=seed % 2 == 0, max_running_requests=6))
    work = RandomWorkload(engine, rng, shared_len=20, max_extra=20, max_tokens=60, max_live=12, p_arrive=0.3,
                          p_abort=0.05)
    work.run(400, check_draining=True)
    assert set(work.finished.values()) <= {"length", "abort"}
    stats = engine.stats()
    assert stats["kv_used_tokens"] == 0 and stats["num_running"] == 0
    assert (stats["retracted_total"] > 0) == (reserve > 0), "retraction must happen exactly when reservations are short"


@pytest.mark.parametrize("seed", [4, 5])
def test_random_workload_with_l3_splits_keeps_kv_consistent(tiny_qwen3, tmp_path, seed):
    """The same with lower tiers, caches dropped now and then so prompts come back from L3, and costs under
    which the L3 hits are split (head recomputed while the tail is fetched): pauses, rejoins and aborts of
    paused requests leak nothing, and every tail ends exactly once."""
    rng = random.Random(seed)
    engine = Engine(EngineConfig(model=str(tiny_qwen3), **{**CPU_OPTS, "kv_cache_gb": 0.0002},
                                 enable_hicache=True, kv_store=f"file://{tmp_path}", hicache_load_policy="cost",
                                 hicache_prefetch_policy="wait_complete", hicache_prefetch_threshold=4,
                                 max_prefill_tokens=rng.choice([5, 64]), overlap_schedule=seed % 2 == 0,
                                 max_running_requests=6))
    cost = engine.kv.cost
    cost.fix(engine.kv.page_size / 1e-3, {"L3": cost.page_bytes / 2e-3, "L2": 1e15}, overlap=True)
    work = RandomWorkload(engine, rng, shared_len=48, max_extra=12, max_tokens=16, max_live=10, p_arrive=0.35,
                          p_abort=0.06)

    def drop_caches() -> None:
        if rng.random() < 0.1:
            engine.kv.drop_device_cache()
            engine.kv.drop_host_cache()  # the prefixes are in the store only

    work.run(300, drop_caches)
    engine.kv.prefetcher.drain()
    engine.kv.check_no_leak(engine.live_pages())
    prefetch = engine.stats()["tiers"]["prefetch"]
    assert prefetch["split"] > 0 and prefetch["split"] == prefetch["split_rejoined"] + prefetch["split_dropped"]
    # every backup reached the copy executor in the order of the numbers the plans' fences name
    assert engine.kv.io.last_seq == engine.kv.copies.issued - 1 > 0 and engine.kv.io.numbering_ok
    engine.close()
