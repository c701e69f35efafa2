"""Randomized engine workload in a tiny pool: admission queueing, retraction, chunking, aborts, overlap.
After every step no KV page is leaked or owned twice; every request ends exactly once."""
from __future__ import annotations

import random

import pytest

from tests.conftest import CPU_OPTS
from tierlm.config import EngineConfig
from tierlm.engine.engine import Engine
from tierlm.sampling_params import SamplingParams


@pytest.mark.parametrize("seed, reserve", [(0, 0), (1, 1), (2, 3), (3, 2)])
def test_random_workload_keeps_kv_consistent(tiny_qwen3, seed, reserve):
    rng = random.Random(seed)
    engine = Engine(EngineConfig(model=str(tiny_qwen3), **{**CPU_OPTS, "kv_cache_gb": 0.0002},
                                 reserve_new_tokens=reserve, max_prefill_tokens=rng.choice([5, 64]),
                                 overlap_schedule=seed % 2 == 0, max_running_requests=6))
    shared = [rng.randrange(1, 500) for _ in range(20)]
    finished: dict[str, str] = {}
    live: set[str] = set()
    for step in range(400):
        if rng.random() < 0.3 and len(live) < 12:
            rid = f"r{step}"
            prompt = shared[:rng.randrange(0, 20)] + [rng.randrange(1, 500) for _ in range(rng.randrange(1, 20))]
            engine.add_request(rid, prompt, SamplingParams(temperature=rng.choice([0.0, 1.0]), ignore_eos=True,
                                                           max_tokens=rng.randrange(1, 60), detokenize=False))
            live.add(rid)
        if live and rng.random() < 0.05:
            engine.abort_request(rng.choice(sorted(live)))
        for out in engine.step():
            if out.finished:
                assert out.request_id not in finished, "a request finished twice"
                finished[out.request_id] = out.finish_reason
                live.discard(out.request_id)
        engine.kv.check_no_leak(engine.live_pages())
    while engine.has_unfinished():
        for out in engine.step():
            if out.finished:
                finished[out.request_id] = out.finish_reason
                live.discard(out.request_id)
        engine.kv.check_no_leak(engine.live_pages())
    assert not live
    assert set(finished.values()) <= {"length", "abort"}
    stats = engine.stats()
    assert stats["kv_used_tokens"] == 0 and stats["num_running"] == 0
    assert (stats["retracted_total"] > 0) == (reserve > 0), "retraction must happen exactly when reservations are short"
