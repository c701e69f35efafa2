"""L3 page keys on the scheduler's thread: a request that extends a cached conversation hashes only the
pages the prefix cache lacks (at arrival, for its L3 lookup, and at release, for the new leaf), and the keys
are the ones hashing the whole sequence gives."""
from __future__ import annotations

from tests.kvcache.tiers import make_tiered
from tierlm.kvcache.keys import PageHasher
from tierlm.kvcache.stores.memory import MemoryKVStore

PS = 4
TURN = 10  # pages of the first turn
MORE = 3  # pages the second turn adds


class CountingHasher(PageHasher):
    """Counts the pages it hashes."""

    hashed = 0

    def chain(self, tokens, parent=None):
        keys = super().chain(tokens, parent)
        self.hashed += len(keys)
        return keys


class LookupStore(MemoryKVStore):
    """Records the keys of each lookup."""

    def __init__(self) -> None:
        super().__init__()
        self.looked_up: list[list[str]] = []

    def batch_exists(self, keys):
        self.looked_up.append(list(keys))
        return super().batch_exists(keys)


def serve(kv, tokens):
    """Admit a request for `tokens`, then release it into the prefix cache."""
    got = kv.admit("r", tokens, len(tokens) + 1, len(tokens) + 1, 0)
    pages = list(got.pages)
    assert kv.grow(pages, len(tokens))
    kv.release(got.row, tokens, pages, got.node, got.num_prefix_pages, cache=True)


def test_a_longer_turn_hashes_only_the_pages_the_cache_lacks():
    hasher, store = CountingHasher("t", PS), LookupStore()
    kv, _, _ = make_tiered(PS, 64, 64, store=store, hasher=hasher, threads=False, prefetch_threshold=PS)
    try:
        first = list(range(1, 1 + TURN * PS))
        serve(kv, first)
        longer = first + list(range(500, 500 + MORE * PS))
        hasher.hashed = 0
        kv.prefetch_start("next", longer + [7])  # arrival: the L3 lookup of the pages beyond L1/L2
        assert store.looked_up[-1] == PageHasher("t", PS).chain(longer)[TURN:] and hasher.hashed == MORE
        kv.prefetch_cancel("next")
        hasher.hashed = 0
        serve(kv, longer)  # release: the new leaf's keys
        assert hasher.hashed == MORE
        leaf_keys = [k for n in kv.radix.nodes() if n.page_hashes for k in n.page_hashes]
        assert sorted(leaf_keys) == sorted(PageHasher("t", PS).chain(longer))
    finally:
        kv.close()


def test_keys_are_hashed_from_the_start_where_the_tree_holds_none():
    hasher = CountingHasher("t", PS)
    kv, _, _ = make_tiered(PS, 64, 64, store=LookupStore(), hasher=hasher, threads=False)
    try:
        first = list(range(1, 1 + TURN * PS))
        serve(kv, first)
        for node in kv.radix.nodes():
            node.page_hashes = None  # a prefix the tree holds without keys
        longer = first + list(range(500, 500 + MORE * PS))
        serve(kv, longer)
        (leaf,) = [n for n in kv.radix.nodes() if n.page_hashes]
        assert leaf.page_hashes == PageHasher("t", PS).chain(longer)[TURN:]
    finally:
        kv.close()
