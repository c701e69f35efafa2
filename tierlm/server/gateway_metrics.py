"""The engine gauges under the names inference gateways scrape: the Gateway API Inference Extension's model
server protocol reads queue length, running requests and KV-cache utilization (and, optionally, the block size
and device block count) under vLLM's metric names, which its endpoint picker uses by default.

Same values as TierLM's own `tierlm_*` gauges, from the same engine stats snapshot; the labels are vLLM's.
"""
from __future__ import annotations

from typing import Any, Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

ENGINE_LABEL = "0"  # one engine per server (vLLM labels each engine core by its index)


def gateway_gauges(stats: dict[str, Any], model_name: str, page_size: int) -> Iterator[Metric]:
    """vLLM-named gauges of an `Engine.stats()` snapshot (nothing before the first snapshot)."""
    labels, values = ["engine", "model_name"], [ENGINE_LABEL, model_name]

    def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
        g = GaugeMetricFamily(name, doc, labels=labels)
        g.add_metric(values, value)
        return g

    if "num_waiting" in stats:
        yield gauge("vllm:num_requests_waiting", "Requests waiting to be scheduled (TotalQueuedRequests).",
                    float(stats["num_waiting"]))
    if "num_running" in stats:
        yield gauge("vllm:num_requests_running", "Requests prefilling or decoding (TotalRunningRequests).",
                    float(stats["num_running"]))
    total = float(stats.get("kv_total_tokens") or 0)
    if total:
        usage = float(stats.get("kv_used_tokens", 0)) / total
        yield gauge("vllm:kv_cache_usage_perc", "Fraction of the device KV pool held by running requests or "
                    "locked prefixes, 0 to 1 (KVCacheUtilization).", usage)
        yield gauge("vllm:gpu_cache_usage_perc", "The same fraction under its earlier name.", usage)
        info = GaugeMetricFamily("vllm:cache_config_info", "KV cache configuration (BlockSize, NumGPUBlocks, "
                                 "CacheDtype).", labels=["engine", "block_size", "num_gpu_blocks", "cache_dtype"])
        info.add_metric([ENGINE_LABEL, str(page_size), str(int(total) // max(page_size, 1)),
                         str(stats.get("kv_cache_dtype", "auto"))], 1.0)
        yield info
