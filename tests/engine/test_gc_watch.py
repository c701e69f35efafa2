"""The engine keeps what start-up built out of garbage collections while it serves, gives it back when it
closes, and counts the collector's pauses."""
from __future__ import annotations

import gc

from tests.conftest import CPU_OPTS
from tierlm import LLM, SamplingParams
from tierlm.engine.gc_watch import GcWatch


def test_watch_counts_collections_per_generation_until_closed():
    watch = GcWatch()
    gc.collect(2)
    gc.collect(0)
    snap = watch.snapshot()
    assert snap["collections"][2] >= 1 and snap["collections"][0] >= 1
    assert snap["seconds"][2] > 0 and snap["longest_s"] >= snap["seconds"][2] / snap["collections"][2]
    watch.close()
    gc.collect(2)
    assert watch.snapshot()["collections"][2] == snap["collections"][2]  # no longer watching
    assert watch._on_gc not in gc.callbacks


def test_the_heap_built_at_start_up_is_frozen_while_serving_and_thawed_at_close(tiny_qwen3):
    gc.unfreeze()
    llm = LLM(str(tiny_qwen3), **CPU_OPTS)
    try:
        frozen = gc.get_freeze_count()
        # everything start-up made (torch, the model, the engine) is skipped by collections: far more objects
        # than serving allocates afterwards
        assert frozen > 10_000 and frozen > len(gc.get_objects())
        llm.generate(["a frozen heap still serves"], SamplingParams(temperature=0.8, max_tokens=4, seed=1))
        gc.collect(2)
        stats = llm.engine.stats()["gc"]
        # counted at freeze time (objects freed since by reference counting leave the frozen list)
        assert stats["collections"][2] >= 1 and stats["frozen_objects"] >= frozen
    finally:
        llm.close()
    assert gc.get_freeze_count() == 0  # a closed engine's objects are collectable again


def test_no_gc_freeze_leaves_the_heap_as_it_is(tiny_qwen3):
    gc.unfreeze()
    llm = LLM(str(tiny_qwen3), gc_freeze=False, **CPU_OPTS)
    try:
        assert gc.get_freeze_count() == 0 and llm.engine.stats()["gc"]["frozen_objects"] == 0
    finally:
        llm.close()


def test_a_snapshot_does_not_walk_the_frozen_heap(monkeypatch):
    """`stats()` runs beside serving (every /metrics scrape, every STATS query, between two steps): counting the
    frozen objects walks all of them, so the count is taken once, at freeze time."""
    watch = GcWatch(frozen=123_456)
    monkeypatch.setattr(gc, "get_freeze_count", lambda: (_ for _ in ()).throw(AssertionError("walked")))
    try:
        assert watch.snapshot()["frozen_objects"] == 123_456
    finally:
        watch.close()
