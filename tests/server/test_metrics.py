"""`ServerMetrics`: engine stats become Prometheus series, tier I/O counters included."""
from __future__ import annotations

from tierlm.server.metrics import ServerMetrics


def test_tier_io_counters_are_exported():
    m = ServerMetrics()
    m.update_engine({"kv_total_tokens": 100, "kv_used_tokens": 25,
                     "tier_hits": {"L1": {"hits": 2, "tokens": 32}, "L2": {"hits": 1, "tokens": 16}},
                     "tiers": {"loads": {"batches": 1, "bytes": 4096, "seconds": 0.5},
                               "backups": {"pages": 3, "bytes": 12288, "eviction_wait_s": 0.25,
                                           "pages_direct": 2, "pages_staged": 1}}})
    text = m.render().decode()
    for line in ('tierlm_cache_hit_tokens_total{tier="L2"} 16.0', "tierlm_kv_load_bytes_total 4096.0",
                 "tierlm_kv_load_seconds_total 0.5", "tierlm_kv_backup_bytes_total 12288.0",
                 "tierlm_kv_backup_pages_direct_total 2.0", "tierlm_kv_backup_pages_staged_total 1.0",
                 "tierlm_kv_eviction_wait_seconds_total 0.25", "tierlm_kv_usage_ratio 0.25"):
        assert line in text, line


def test_no_tier_series_without_tiers():
    m = ServerMetrics()
    m.update_engine({"kv_total_tokens": 100, "kv_used_tokens": 0})
    assert "tierlm_kv_load_bytes" not in m.render().decode()


def test_per_rank_tier_figures_are_exported():
    m = ServerMetrics()
    m.update_engine({"kv_total_tokens": 100, "ranks": [
        {"rank": 0, "kv_pool_bytes": 1024, "host_bytes": 4096, "io_errors": 0, "dropped_write_pages": 0},
        {"rank": 1, "kv_pool_bytes": 1024, "host_bytes": 4096, "io_errors": 3, "dropped_write_pages": 2},
        {"rank": 2, "state": "no report yet"}]})
    text = m.render().decode()
    for line in ('tierlm_rank_kv_pool_bytes{rank="0"} 1024.0', 'tierlm_rank_host_kv_bytes{rank="1"} 4096.0',
                 'tierlm_rank_l3_io_errors{rank="1"} 3.0', 'tierlm_rank_l3_dropped_write_pages{rank="1"} 2.0'):
        assert line in text, line
    assert 'rank="2"' not in text


def test_load_or_recompute_split_and_cost_estimates_are_exported():
    m = ServerMetrics()
    m.update_engine({"tiers": {"L2": {"tokens": 64, "recomputed_tokens": 16},
                               "L3": {"tokens": 0, "recomputed_tokens": 32},
                               "cost": {"prefill_tokens_per_s": 2e4, "L2_bytes_per_s": 2.5e10,
                                        "L3_bytes_per_s": 1.5e9}}})
    text = m.render().decode()
    for line in ('tierlm_cache_tier_tokens_total{path="loaded",tier="L2"} 64.0',
                 'tierlm_cache_tier_tokens_total{path="recomputed",tier="L2"} 16.0',
                 'tierlm_cache_tier_tokens_total{path="recomputed",tier="L3"} 32.0',
                 "tierlm_kv_cost_prefill_tokens_per_second 20000.0",
                 'tierlm_kv_cost_load_bytes_per_second{tier="L3"} 1.5e+09'):
        assert line in text, line


def test_host_eviction_order_and_withheld_writes_are_exported():
    m = ServerMetrics()
    m.update_engine({"tiers": {"L2": {"evicted_pages": 12, "eviction_order": "reused", "eviction_order_flips": 1},
                               "backups": {"l3_withheld_pages": 7}}})
    text = m.render().decode()
    for line in ("tierlm_host_evicted_pages_total 12.0", "tierlm_host_eviction_order_flips_total 1.0",
                 "tierlm_l3_write_withheld_pages_total 7.0",
                 'tierlm_host_eviction_order{order="reused"} 1.0', 'tierlm_host_eviction_order{order="lru"} 0.0'):
        assert line in text, line


def test_step_phases_are_exported_as_counters():
    m = ServerMetrics()
    m.update_engine({"step_host": {"steps": 10, "seconds": {"schedule": 0.5, "launch": 1.0, "wait": 2.0,
                                                             "outputs": 0.25}}})
    text = m.render().decode()
    for line in ("tierlm_engine_steps_total 10.0", 'tierlm_step_host_seconds_total{phase="wait"} 2.0',
                 'tierlm_step_host_seconds_total{phase="schedule"} 0.5'):
        assert line in text, line


def test_garbage_collections_are_exported_per_generation():
    m = ServerMetrics()
    m.update_engine({"gc": {"collections": [40, 3, 1], "seconds": [0.01, 0.002, 0.125], "longest_s": 0.125,
                            "frozen_objects": 1000}})
    text = m.render().decode()
    for line in ('tierlm_gc_collections_total{generation="2"} 1.0',
                 'tierlm_gc_pause_seconds_total{generation="2"} 0.125',
                 'tierlm_gc_collections_total{generation="0"} 40.0'):
        assert line in text, line
