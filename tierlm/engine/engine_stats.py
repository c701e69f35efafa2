"""An `Engine`'s figures: live ones for /stats and the metrics (`engine_stats`), static ones for start-up logs and
benchmark reports (`engine_info`)."""
from __future__ import annotations

from typing import Any


def engine_stats(engine: Any) -> dict:
    """Requests, KV use, token counters, tier hits and figures, host time per step phase, collector pauses (and per
    tensor-parallel rank, their own figures)."""
    kv, ps = engine.kv, engine.kv.page_size
    cached = kv.radix.evictable_pages if kv.radix else 0
    return {
        "num_running": len(engine.scheduler.running),
        "num_waiting": engine.num_waiting(),
        "kv_total_tokens": kv.capacity_pages * ps,
        "kv_cache_dtype": engine.config.kv_cache_dtype,
        "kv_used_tokens": kv.used_pages() * ps,
        "kv_free_tokens": kv.allocator.num_free * ps,
        "kv_cached_tokens": cached * ps,
        "prompt_tokens_total": engine.counters["prompt_tokens"],
        "cached_tokens_total": engine.counters["cached_tokens"],
        "generated_tokens_total": engine.counters["generated_tokens"],
        "requests_total": engine.counters["requests"],
        "retracted_total": engine.scheduler.num_retracted,
        "tier_hits": kv.tier_hits(),  # per tier: requests with a hit there, tokens served from it
        "tiers": kv.tier_stats(),  # per tier: bytes, latency, capacity, evictions; L3 store counters
        "step_host": engine.clock.snapshot(),  # host milliseconds per step, per phase
        "gc": engine.gc.snapshot(),  # garbage-collector runs and pauses (process-wide)
        **({"ranks": engine.worker.rank_figures()} if engine.config.tp_size > 1 else {}),
    }

def engine_info(engine: Any) -> dict:
    """The attention backend, overlap, KV pool and page size, context, graphs, tensor-parallel size, start-up."""
    return {"attention_backend": type(engine.worker.runner.attn).__name__, "overlap": engine.overlap,
            "kv_pool_tokens": engine.kv.capacity_pages * engine.kv.page_size, "page_size": engine.kv.page_size,
            "kv_cache_dtype": engine.worker.layout.layers[0][0].dtype,
            "max_model_len": engine.max_model_len, "cuda_graph": engine.worker.runner.graphs is not None,
            "piecewise_graph_tokens": getattr(engine.worker.runner.pieces, "max_tokens", 0),
            "tp_size": engine.config.tp_size,
            **engine.startup}
