"""`build_kv_manager`: the engine's one call to construct its KV cache (plain, or tiered) from config."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

from tierlm.config import EngineConfig
from tierlm.kvcache.host_pool import host_pool_pages
from tierlm.kvcache.keys import PageHasher, model_fingerprint, weights_identity
from tierlm.kvcache.manager import KVCacheManager
from tierlm.kvcache.pool import KVPool


def build_kv_manager(config: EngineConfig, pool: KVPool, max_reqs: int, max_len: int,
                     model_config: Mapping[str, Any], model_dir: Optional[Path], threads: bool = True
                     ) -> KVCacheManager:
    """A `KVCacheManager`, or a `TieredKVCacheManager` when --enable-hicache or --kv-store is given.

    Raises ValueError (naming the flag) when the host pool does not fit in memory or the store cannot open.
    """
    if not (config.enable_hicache or config.kv_store):
        return KVCacheManager(pool.num_pages, config.page_size, max_reqs, max_len, config.enable_prefix_cache,
                              pool.device)
    from tierlm.kvcache.tiered import TieredKVCacheManager

    per_page = KVPool.bytes_per_page(pool.page_size, pool.num_layers, pool.num_kv_heads, pool.head_dim, pool.dtype)
    host_pages = host_pool_pages(pool.num_pages - 1, per_page, config.hicache_ratio, config.hicache_size)
    store = hasher = None
    if config.kv_store:
        from tierlm.kvcache.stores import open_store

        weights = weights_identity(model_dir, config.load_format, config.seed)
        fp = model_fingerprint(model_config, weights, str(pool.dtype), pool.page_size,
                               (pool.num_layers, pool.num_kv_heads, pool.head_dim))
        hasher = PageHasher(fp, pool.page_size)
        store = open_store(config.kv_store, int(config.kv_store_max_gb * 2**30), config.kv_store_timeout)
    return TieredKVCacheManager(
        config.page_size, max_reqs, max_len, pool, host_pages, write_policy=config.hicache_write_policy,
        write_threshold=config.hicache_write_threshold, store=store, hasher=hasher,
        prefetch_policy=config.hicache_prefetch_policy, prefetch_timeout=config.hicache_prefetch_timeout,
        prefetch_threshold=config.hicache_prefetch_threshold, io_backend=config.hicache_io_backend,
        threads=threads)
