"""`build_kv_cache`: the engine's KV controller, and the worker's tiers, from `EngineConfig`."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

from tierlm.config import EngineConfig
from tierlm.engine.worker import Worker
from tierlm.engine.worker_group import WorkerGroup
from tierlm.kvcache.contracts import TierSetup
from tierlm.kvcache.events import KVEventSink
from tierlm.kvcache.host_pool import host_pool_pages
from tierlm.kvcache.keys import PageHasher, model_fingerprint, weights_identity
from tierlm.kvcache.manager import KVCacheManager


def build_kv_cache(config: EngineConfig, worker: Worker | WorkerGroup, model_config: Mapping[str, Any],
                   model_dir: Optional[Path], threads: bool = True,
                   events: Optional[KVEventSink] = None) -> KVCacheManager:
    """A `KVCacheManager` over `worker`'s device pool; with --enable-hicache or --kv-store also the host pool,
    its copy executor on the worker, and the L3 store keyed by the model's fingerprint and KV layout. Page
    keys (the L3 store's, also the block hashes of KV `events`) come from the same fingerprint.

    Raises ValueError (naming the flag) when the host pool does not fit in memory or the store cannot open.
    """
    pool = worker.pool
    hasher = None
    if config.kv_store or events is not None:
        weights = weights_identity(model_dir, config.load_format, config.seed)
        hasher = PageHasher(model_fingerprint(model_config, weights, worker.layout, pool.page_size), pool.page_size)
    if not (config.enable_hicache or config.kv_store):
        return KVCacheManager(pool.num_pages, config.page_size, config.max_running_requests,
                              config.enable_prefix_cache, events=events, hasher=hasher)
    host_pages = host_pool_pages(pool.num_pages - 1, pool.bytes_per_page, config.hicache_ratio, config.hicache_size)
    store = None
    if config.kv_store:
        from tierlm.kvcache.stores import open_store
        from tierlm.kvcache.stores.shard import ShardKVStore

        store = open_store(config.kv_store, int(config.kv_store_max_gb * 2**30), config.kv_store_timeout)
        shard = worker.tp.shard_name(worker.runner.model_cfg.num_kv_heads)
        if shard:  # this rank's part of each page, under its own key
            store = ShardKVStore(store, shard)
    io = worker.attach_tiers(host_pages, config.hicache_io_backend, store, threads, store_url=config.kv_store)
    store = io.store  # under tensor parallelism, every rank's shard behind one store
    return KVCacheManager(pool.num_pages, config.page_size, config.max_running_requests, True, TierSetup(
        host_pages=host_pages, page_bytes=pool.bytes_per_page, io=io, pinned=worker.host.pinned,
        write_policy=config.hicache_write_policy, write_threshold=config.hicache_write_threshold, store=store,
        storage_write_policy=config.hicache_storage_write_policy, eviction_policy=config.hicache_eviction_policy,
        hasher=hasher, prefetch_policy=config.hicache_prefetch_policy,
        prefetch_timeout=config.hicache_prefetch_timeout, prefetch_threshold=config.hicache_prefetch_threshold,
        load_policy=config.hicache_load_policy, max_step_tokens=config.max_prefill_tokens),
        events=events)
