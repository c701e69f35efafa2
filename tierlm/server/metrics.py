"""Prometheus metrics of one server: request counts and latencies measured by the frontend, plus engine
gauges (running/waiting requests, KV usage, cache hits per tier) from an engine stats snapshot — under
TierLM's names and, for inference gateways, under vLLM's (`tierlm.server.gateway_metrics`).

Each `ServerMetrics` owns its own registry, so several apps (tests) never share mutable global state.
"""
from __future__ import annotations

from typing import Any, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from tierlm.server.gateway_metrics import gateway_gauges

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TOKEN_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

_GAUGES = (("num_running", "num_requests_running", "Requests decoding or prefilling in the engine."),
           ("num_waiting", "num_requests_waiting", "Requests queued in the engine."),
           ("kv_total_tokens", "kv_total_tokens", "Device KV pool size in tokens."),
           ("kv_used_tokens", "kv_used_tokens", "KV tokens held by running requests or locked cache entries."),
           ("kv_free_tokens", "kv_free_tokens", "Free KV tokens."),
           ("kv_cached_tokens", "kv_cached_tokens", "Evictable prefix-cache KV tokens."))

# (key of Engine.stats(), metric name, help): the engine's own counters, advanced as it works (a request's
# tokens count as each is generated, where the frontend's counters wait for the request to finish)
_ENGINE_COUNTERS = (
    ("prompt_tokens_total", "engine_prompt_tokens", "Prompt tokens admitted by the engine."),
    ("cached_tokens_total", "engine_cached_tokens", "Prompt tokens served from a cache tier."),
    ("generated_tokens_total", "engine_generation_tokens", "Tokens the engine generated, counted as each is."),
    ("requests_total", "engine_requests", "Requests the engine accepted."),
    ("retracted_total", "engine_retracted_requests",
     "Times a running request gave back its KV pages to be run again later (no room to decode)."),
)

# (group of Engine.stats()["tiers"], key, metric name, help) of the tier I/O counters
_TIER_COUNTERS = (
    ("loads", "bytes", "kv_load_bytes", "Bytes loaded from host (L2) into the device KV pool."),
    ("loads", "seconds", "kv_load_seconds", "Device time of host-to-device KV loads."),
    ("backups", "bytes", "kv_backup_bytes", "Bytes of device KV backed up to host."),
    ("backups", "pages_direct", "kv_backup_pages_direct",
     "Pages backed up by DMA straight from the device pool (runs of pages consecutive on both sides)."),
    ("backups", "pages_staged", "kv_backup_pages_staged",
     "Pages backed up through the device staging buffer (gathered by a kernel, then DMA)."),
    ("backups", "eviction_wait_s", "kv_eviction_wait_seconds",
     "Time the scheduler waited for a backup before it could evict device pages."),
    ("backups", "l3_on_eviction_pages", "l3_write_back_pages",
     "Pages written to L3 as the host tier evicted them (--hicache-storage-write-policy write_back)."),
    ("backups", "l3_skipped_on_eviction_pages", "l3_write_back_skipped_pages",
     "Pages the host tier evicted unwritten after their L3 write-back had failed."),
    ("backups", "l3_withheld_pages", "l3_write_withheld_pages",
     "Pages whose L3 write --hicache-storage-write-policy auto withheld: the store is read by this engine "
     "only, its writes were not read back and its loads would not pay."),
    ("backups", "admission_waits", "kv_backup_admission_waits",
     "Times a request waited for room that backups not yet under way held."),
    ("backups", "issued_for_admission", "kv_backups_issued_for_admission",
     "Times admission issued the decided backups at once because their pages were the room it needed."),
    ("L1", "dropped_while_copying_pages", "kv_dropped_while_copying_pages",
     "Device pages reused while their backup to host still copied (the next step waited on the device)."),
    ("L2", "evicted_pages", "host_evicted_pages", "Pages the host (L2) tier evicted."),
    ("L2", "eviction_order_flips", "host_eviction_order_flips",
     "Times the host tier switched its eviction order (--hicache-eviction-policy adaptive)."),
)


# (key of each Engine.stats()["ranks"] entry, metric name, help): per tensor-parallel rank
_RANK_GAUGES = (
    ("kv_pool_bytes", "kv_pool_bytes", "Device KV pool bytes of this rank."),
    ("host_bytes", "host_kv_bytes", "Host (L2) KV pool bytes of this rank."),
    ("io_errors", "l3_io_errors", "L3 store calls of this rank that failed."),
    ("dropped_write_pages", "l3_dropped_write_pages", "L3 page writes this rank dropped under back-pressure."),
)


def rank_gauges(ranks: list[dict]) -> Iterator[Metric]:
    """Per-rank tier figures (under tensor parallelism each rank has its own pools and store shard)."""
    for key, name, doc in _RANK_GAUGES:
        fam = GaugeMetricFamily(f"tierlm_rank_{name}", doc, labels=["rank"])
        for r in ranks:
            if key in r:
                fam.add_metric([str(r["rank"])], float(r[key]))
        yield fam


class _EngineCollector:
    """Exposes the latest engine stats snapshot (set by `ServerMetrics.update_engine`) as metrics."""

    def __init__(self, model_name: str, page_size: int) -> None:
        self.stats: dict[str, Any] = {}
        self.model_name, self.page_size = model_name, page_size

    def collect(self) -> Iterator[Metric]:
        s = self.stats
        yield from gateway_gauges(s, self.model_name, self.page_size)
        for key, name, doc in _GAUGES:
            if key in s:
                yield GaugeMetricFamily(f"tierlm_{name}", doc, value=float(s[key]))
        total = float(s.get("kv_total_tokens") or 0)
        if total:
            yield GaugeMetricFamily("tierlm_kv_usage_ratio", "Fraction of the KV pool in use.",
                                    value=float(s.get("kv_used_tokens", 0)) / total)
        for key, name, doc in _ENGINE_COUNTERS:
            if key in s:
                yield CounterMetricFamily(f"tierlm_{name}", doc, value=float(s[key]))
        tiers = s.get("tier_hits") or {}
        if tiers:
            hits = CounterMetricFamily("tierlm_cache_hits", "Prefix-cache hits per tier.", labels=["tier"])
            toks = CounterMetricFamily("tierlm_cache_hit_tokens", "Tokens served per cache tier.", labels=["tier"])
            for tier, v in sorted(tiers.items()):
                hits.add_metric([tier], float(v.get("hits", 0)))
                toks.add_metric([tier], float(v.get("tokens", 0)))
            yield hits
            yield toks
        detail = s.get("tiers") or {}
        for group, key, name, doc in _TIER_COUNTERS:
            value = (detail.get(group) or {}).get(key)
            if value is not None:
                yield CounterMetricFamily(f"tierlm_{name}", doc, value=float(value))
        clock = s.get("step_host")
        if clock:
            yield CounterMetricFamily("tierlm_engine_steps", "Engine steps run.", value=float(clock["steps"]))
            phases = CounterMetricFamily("tierlm_step_host_seconds", "Host seconds spent in each phase of the "
                                         "engine's steps (wait: blocked on the device).", labels=["phase"])
            for phase, secs in clock["seconds"].items():
                phases.add_metric([phase], float(secs))
            yield phases
        collector = s.get("gc")
        if collector:
            runs = CounterMetricFamily("tierlm_gc_collections", "Python garbage collections per generation "
                                       "(process-wide).", labels=["generation"])
            pause = CounterMetricFamily("tierlm_gc_pause_seconds", "Seconds Python's garbage collector held the "
                                        "interpreter, per generation.", labels=["generation"])
            for gen, (n, secs) in enumerate(zip(collector["collections"], collector["seconds"])):
                runs.add_metric([str(gen)], float(n))
                pause.add_metric([str(gen)], float(secs))
            yield runs
            yield pause
        if s.get("ranks"):
            yield from rank_gauges(s["ranks"])
        yield from _load_decisions(detail)
        yield from _host_eviction_order(detail)


def _host_eviction_order(detail: dict[str, Any]) -> Iterator[Metric]:
    """Which order the host tier evicts in now (`--hicache-eviction-policy`)."""
    order = (detail.get("L2") or {}).get("eviction_order")
    if order:
        fam = GaugeMetricFamily("tierlm_host_eviction_order", "1 for the order the host tier evicts in now "
                                "(lru, or reused: copies used again since they were made stay).", labels=["order"])
        for name in ("lru", "reused"):
            fam.add_metric([name], float(name == order))
        yield fam


def _load_decisions(detail: dict[str, Any]) -> Iterator[Metric]:
    """What became of the lower tiers' hits (loaded or recomputed) and the cost model's estimates."""
    split = CounterMetricFamily("tierlm_cache_tier_tokens", "Tokens of L2/L3 prefix hits, loaded or recomputed "
                                "(recomputing them was estimated faster).", labels=["tier", "path"])
    for tier in ("L2", "L3"):
        t = detail.get(tier) or {}
        if "recomputed_tokens" in t:
            split.add_metric([tier, "loaded"], float(t.get("tokens", 0)))
            split.add_metric([tier, "recomputed"], float(t["recomputed_tokens"]))
    if split.samples:
        yield split
    cost = detail.get("cost")
    if not cost:
        return
    yield GaugeMetricFamily("tierlm_kv_cost_prefill_tokens_per_second", "Prefill speed the load-or-recompute "
                            "decisions assume (measured; a prior until then).",
                            value=float(cost["prefill_tokens_per_s"]))
    bw = GaugeMetricFamily("tierlm_kv_cost_load_bytes_per_second", "Load bandwidth per tier the "
                           "load-or-recompute decisions assume (L2: host to device, L3: store to host).",
                           labels=["tier"])
    for tier in ("L2", "L3"):
        bw.add_metric([tier], float(cost[f"{tier}_bytes_per_s"]))
    yield bw


class ServerMetrics:
    """All metrics of one server instance, in a private registry rendered by `render()`."""

    def __init__(self, model_name: str = "", page_size: int = 16) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("tierlm_requests", "HTTP requests by endpoint and status.",
                                ["endpoint", "status"], registry=r)
        self.aborted = Counter("tierlm_requests_aborted", "Engine requests aborted (client gone or error).",
                               registry=r)
        self.prompt_tokens = Counter("tierlm_prompt_tokens", "Prompt tokens of finished requests.", registry=r)
        self.generation_tokens = Counter("tierlm_generation_tokens", "Tokens generated by finished requests.",
                                         registry=r)
        self.ttft = Histogram("tierlm_time_to_first_token_seconds", "Time from arrival to the first token.",
                              buckets=LATENCY_BUCKETS, registry=r)
        self.tpot = Histogram("tierlm_time_per_output_token_seconds", "Mean time per output token after the "
                              "first.", buckets=TOKEN_LATENCY_BUCKETS, registry=r)
        self.itl = Histogram("tierlm_inter_token_latency_seconds", "Time between two consecutive outputs of a "
                             "request (each carries one token or more): stalls that the per-request mean hides.",
                             buckets=TOKEN_LATENCY_BUCKETS, registry=r)
        self.e2e = Histogram("tierlm_e2e_request_latency_seconds", "Time from arrival to the last token.",
                             buckets=LATENCY_BUCKETS, registry=r)
        self._engine = _EngineCollector(model_name, page_size)
        r.register(self._engine)

    def update_engine(self, stats: dict[str, Any]) -> None:
        self._engine.stats = dict(stats)

    def render(self) -> bytes:
        return generate_latest(self.registry)
