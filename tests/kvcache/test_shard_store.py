"""`ShardKVStore`: each tensor-parallel rank's part of a page lives under its own key of a shared store."""
from __future__ import annotations

import torch

from tierlm.kvcache.host_pool import HostKVPool
from tierlm.kvcache.layout import KVLayout
from tierlm.kvcache.stores.file import FileKVStore
from tierlm.kvcache.stores.shard import ShardKVStore, shard_key


def host_pool() -> HostKVPool:
    return HostKVPool(2, KVLayout.gqa(1, 1, 4, torch.float32), page_size=2)


def test_unsharded_keys_are_unchanged_and_shard_keys_are_page_keys():
    key = "ab" * 32
    assert shard_key(key, "") == key
    k0, k1 = shard_key(key, "heads0-4of8"), shard_key(key, "heads4-8of8")
    assert k0 != k1 and len(k0) == 64 and int(k0, 16) >= 0


def test_two_ranks_share_one_store_without_mixing(tmp_path):
    """Each rank opens the same directory with its own store object, as rank processes do."""
    hosts = [host_pool(), host_pool()]
    ranks = [ShardKVStore(FileKVStore(tmp_path, 1 << 20), f"heads{i}-{i + 1}of2") for i in range(2)]
    for i, (store, host) in enumerate(zip(ranks, hosts)):
        store.attach(host)
        host.buffer[0].fill_(10 + i)
        assert store.batch_set(["cd" * 32], [0]) == [True]
    plain = ShardKVStore(FileKVStore(tmp_path, 1 << 20), "")
    plain.attach(host_pool())
    assert plain.batch_exists(["cd" * 32]) == 0  # an unsharded engine never reads a shard as a page
    for i, (store, host) in enumerate(zip(ranks, hosts)):
        assert store.batch_exists(["cd" * 32]) == 1
        assert store.batch_get(["cd" * 32], [1]) == [True]
        assert torch.all(host.buffer[1] == 10 + i)
