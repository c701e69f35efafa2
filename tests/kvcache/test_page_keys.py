"""L3 page keys on the scheduler's thread: a request that extends a cached conversation hashes only the
pages the prefix cache lacks (at arrival, for its L3 lookup, and at release, for the new leaf), and the keys
are the ones hashing the whole sequence gives."""
from __future__ import annotations

from tests.kvcache.tiers import make_tiered
from tierlm.kvcache.keys import PageHasher, page_keys
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


def test_chain_is_sha256_of_the_previous_key_and_the_page_as_uint32_le():
    import hashlib
    import struct

    h = PageHasher("fp", PS)
    tokens = [1, 70000, 3, 2**31 + 5, 9, 8, 7, 6, 5]  # two whole pages and a partial one
    first = hashlib.sha256(h.root + struct.pack("<4I", *tokens[:4])).digest()
    second = hashlib.sha256(first + struct.pack("<4I", *tokens[4:8])).digest()
    assert h.chain(tokens) == [first.hex(), second.hex()]  # the format stored pages are named by
    assert h.chain(tokens[4:], parent=first.hex()) == [second.hex()]


def test_keys_hashed_at_arrival_are_not_hashed_again_at_release():
    hasher = CountingHasher("t", PS)
    kv, _, _ = make_tiered(PS, 64, 64, store=LookupStore(), hasher=hasher, threads=False, prefetch_threshold=PS)
    try:
        tokens = list(range(1, 1 + TURN * PS))
        kv.prefetch_start("r", tokens)  # arrival: every page looked up in L3
        assert hasher.hashed == TURN
        got = kv.admit("r", tokens, len(tokens) + 1, len(tokens) + 1, 0)
        pages = list(got.pages)
        answer = tokens + list(range(900, 900 + 2 * PS))  # the answer adds two pages
        assert kv.grow(pages, len(answer))
        kv.release(got.row, answer, pages, got.node, got.num_prefix_pages, cache=True)
        assert hasher.hashed == TURN + 2  # only the answer's pages at release
        leaf_keys = [k for n in kv.radix.nodes() if n.page_hashes for k in n.page_hashes]
        assert sorted(leaf_keys) == sorted(PageHasher("t", PS).chain(answer))
        assert not kv._row_keys and not kv.prefetcher.arrival_keys
        kv.prefetch_start("gone", list(range(300, 300 + TURN * PS)))
        kv.prefetch_cancel("gone")  # a request that leaves before admission keeps nothing
        assert not kv.prefetcher.arrival_keys
    finally:
        kv.close()


def test_known_keys_cover_any_part_of_the_pages_asked_for():
    h = PageHasher("t", PS)
    tokens = list(range(1, 1 + 8 * PS))
    full = h.chain(tokens)
    for start, stop in ((0, 8), (2, 5), (3, 8), (0, 1), (7, 8)):
        known = (start, full[start:stop])
        for first in range(0, 8):
            parent = full[first - 1] if first else None
            assert page_keys(h, tokens, known)(first, parent) == full[first:], (start, stop, first)
    assert page_keys(h, tokens[:4 * PS], (2, full[2:8]))(1, full[0]) == full[1:4]  # tokens shorter than known
