"""L3 writes never stall serving: beyond a bound of bytes in flight a write is dropped (counted) while the host
copy stands; once the store catches up, writes go through again."""
from __future__ import annotations

import threading

from tests.kvcache.tiers import make_tiered, run_copies
from tierlm.kvcache.eviction import host_valid
from tierlm.kvcache.keys import PageHasher
from tierlm.kvcache.stores.memory import MemoryKVStore


class GatedStore(MemoryKVStore):
    """A memory store whose writes (or, with `reads`, page reads) wait for a gate (a slow disk)."""

    def __init__(self, reads: bool = False) -> None:
        super().__init__()
        self.gate, self.reads = threading.Event(), reads

    def batch_set(self, keys, host_pages):
        if not self.reads:
            self.gate.wait(10)
        return super().batch_set(keys, host_pages)

    def batch_get(self, keys, host_pages):
        if self.reads:
            self.gate.wait(10)
        return super().batch_get(keys, host_pages)


def cache_prompt(kv, request_id: str, tokens: list[int]):
    """Run a 6-token request through admission and release it into the cache; its backup (host copy, then
    the L3 write) is queued and started. Returns its radix node."""
    got = kv.admit(request_id, tokens, 6, 6, 0)
    assert kv.grow(got.pages, 6)
    kv.release(got.row, tokens, got.pages, got.node, 0, cache=True)
    node = kv.radix.match_prefix(tokens).node
    run_copies(kv)
    return node


def cache_prompts(kv, count: int) -> list:
    """`cache_prompt` for `count` distinct prompts; returns their nodes once every host copy is done (so every
    L3 write has been queued or dropped)."""
    nodes = [cache_prompt(kv, str(i), [10 + i, 1, 2, 3, 4, 5]) for i in range(count)]
    for node in nodes:
        node.io[-1].copy.result(timeout=10)
    return nodes


def test_writes_beyond_the_bound_are_dropped_not_waited_for():
    store = GatedStore()
    kv, pool, _ = make_tiered(2, 40, 32, store=store, hasher=PageHasher("t", 2))
    kv.io.l3_queue_bytes = 3 * pool.bytes_per_page  # room for one 3-page write in flight
    try:
        nodes = cache_prompts(kv, 3)
        assert all(host_valid(n) for n in nodes)  # host copies complete although the store wrote nothing yet
        assert kv.io.l3_dropped_pages == 6 and store.stats()["pages_written"] == 0
        store.gate.set()
        kv.flush()
        assert store.stats()["pages_written"] == 3 and kv.tier_stats()["L3"]["dropped_write_pages"] == 6
        cache_prompt(kv, "x", [99, 1, 2, 3, 4, 5])  # the queue has drained: the next write goes through
        kv.flush()
        assert store.stats()["pages_written"] == 6
    finally:
        store.gate.set()
        kv.close()


def test_a_lookup_does_not_queue_behind_writes():
    store = GatedStore()
    kv, pool, _ = make_tiered(2, 40, 32, store=store, hasher=PageHasher("t", 2))
    try:
        cache_prompts(kv, 8)  # more writes than store threads, all stuck on a slow disk
        assert store.stats()["pages_written"] == 0
        keys = PageHasher("t", 2).chain([10, 1, 2, 3])
        assert kv.io.submit_store(store.batch_exists, keys).result(timeout=5) == 0  # not written yet
    finally:
        store.gate.set()
        kv.close()


class Recorder:
    """An event sink that keeps what it was told."""

    def __init__(self) -> None:
        self.log: list[tuple] = []

    def stored(self, medium, page_keys, parent_key, token_ids):
        self.log.append(("stored", medium, tuple(page_keys)))

    def removed(self, medium, page_keys):
        self.log.append(("removed", medium, tuple(page_keys)))

    def cleared(self):
        self.log.append(("cleared",))


def test_a_dropped_write_unmarks_its_node_and_says_so_in_the_events():
    store = GatedStore()
    kv, pool, _ = make_tiered(2, 40, 32, store=store, hasher=PageHasher("t", 2))
    kv.io.l3_queue_bytes = 3 * pool.bytes_per_page  # room for one 3-page write in flight
    kv.radix.events.sink = events = Recorder()
    try:
        nodes = cache_prompts(kv, 2)
        assert all(n.in_store for n in nodes) and kv.io.l3_dropped_pages == 3  # decided: both marked
        store.gate.set()
        kv.flush()  # flush polls: the dropped write's node is unmarked, the written one stays
        assert [n.in_store for n in nodes] == [True, False]
        assert store.stats()["pages_written"] == 3
        disk = [e for e in events.log if e[0] != "cleared" and e[1] == "DISK"]
        keys = [tuple(n.page_hashes) for n in nodes]
        assert disk == [("stored", "DISK", keys[0]), ("stored", "DISK", keys[1]), ("removed", "DISK", keys[1])]
    finally:
        store.gate.set()
        kv.close()


def test_the_idle_wait_ends_at_the_first_completion_not_behind_a_slow_write():
    import time

    store = GatedStore()
    kv, pool, _ = make_tiered(2, 40, 32, store=store, hasher=PageHasher("t", 2))
    try:
        cache_prompts(kv, 1)  # its L3 write now waits on the gate
        lookup_may_end = threading.Event()
        kv.io.submit_store(lambda: lookup_may_end.wait(10))
        threading.Timer(0.05, lookup_may_end.set).start()
        t0 = time.monotonic()
        kv.idle_wait(8.0)
        assert time.monotonic() - t0 < 4.0  # back at the lookup's end, with the write still stuck
        assert not kv.io.idle()
    finally:
        store.gate.set()
        kv.close()


def test_a_lookup_never_waits_behind_page_reads():
    store = GatedStore(reads=True)
    kv, _, _ = make_tiered(2, 40, 32, store=store, hasher=PageHasher("t", 2))
    try:
        reads = [kv.io.submit_store(store.batch_get, ["k"], [0]) for _ in range(8)]  # every read worker busy
        lookup = kv.io.submit_lookup(store.batch_exists, ["k"])
        assert lookup.result(timeout=2) == 0 and not any(r.done() for r in reads)
    finally:
        store.gate.set()
        kv.flush()


def test_tier_io_threads_lower_the_switch_interval():
    """With I/O threads the interpreter switches threads every IO_SWITCH_INTERVAL_S, so a store call that
    released the GIL takes it back soon beside a busy scheduler thread; a lower setting stays, and without
    threads nothing changes."""
    import sys

    from tierlm.kvcache.tier_io import IO_SWITCH_INTERVAL_S

    old = sys.getswitchinterval()
    try:
        sys.setswitchinterval(0.005)
        kv, _, _ = make_tiered(2, 8, 8, store=MemoryKVStore(), hasher=PageHasher("t", 2), threads=False)
        kv.close()
        assert sys.getswitchinterval() == 0.005
        kv, _, _ = make_tiered(2, 8, 8, store=MemoryKVStore(), hasher=PageHasher("t", 2))
        kv.close()
        assert abs(sys.getswitchinterval() - IO_SWITCH_INTERVAL_S) < 1e-9
        sys.setswitchinterval(0.0001)
        kv, _, _ = make_tiered(2, 8, 8, store=MemoryKVStore(), hasher=PageHasher("t", 2))
        kv.close()
        assert abs(sys.getswitchinterval() - 0.0001) < 1e-9
    finally:
        sys.setswitchinterval(old)
