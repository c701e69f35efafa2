"""`ReadsFirst`: an L3 write waits while a read runs (at most its bound), a read never waits."""
from __future__ import annotations

import threading
import time

from tests.kvcache.tiers import make_tiered, run_copies
from tierlm.kvcache.io_gate import ReadsFirst
from tierlm.kvcache.keys import PageHasher
from tierlm.kvcache.stores.memory import MemoryKVStore


def test_write_waits_for_the_reads_in_flight():
    gate, order = ReadsFirst(max_wait=5), []
    inside, leave = threading.Event(), threading.Event()

    def read():
        with gate.reading():
            inside.set()
            leave.wait(5)
            order.append("read done")

    def write():
        gate.before_write()
        order.append("write starts")

    r = threading.Thread(target=read)
    r.start()
    inside.wait(5)
    w = threading.Thread(target=write)
    w.start()
    time.sleep(0.1)
    assert order == []  # the write is held while the read runs
    leave.set()
    r.join(5), w.join(5)
    assert order == ["read done", "write starts"] and gate.write_wait_s > 0.05


def test_write_is_never_starved_and_an_idle_gate_costs_nothing():
    gate = ReadsFirst(max_wait=0.05)
    gate.before_write()
    assert gate.write_wait_s == 0.0
    with gate.reading():
        t0 = time.perf_counter()
        gate.before_write()  # a read that never ends: the write goes after the bound
        assert 0.04 < time.perf_counter() - t0 < 1.0


class SlowReads(MemoryKVStore):
    """Reads that wait for a gate; writes recorded in order with the reads' completion."""

    def __init__(self) -> None:
        super().__init__()
        self.release, self.log = threading.Event(), []

    def batch_get(self, keys, host_pages):
        self.release.wait(5)
        self.log.append("get")
        return super().batch_get(keys, host_pages)

    def batch_set(self, keys, host_pages):
        self.log.append("set")
        return super().batch_set(keys, host_pages)


def test_tier_io_backups_wait_for_prefetch_reads():
    store = SlowReads()
    kv, _, _ = make_tiered(2, 40, 32, store=store, hasher=PageHasher("t", 2))
    try:
        read = kv.io.submit_store(store.batch_get, ["k"], [0])
        time.sleep(0.05)
        got = kv.admit("a", [1, 2, 3, 4, 5, 6], 6, 6, 0)
        assert kv.grow(got.pages, 6)
        kv.release(got.row, [1, 2, 3, 4, 5, 6], got.pages, got.node, 0, cache=True)
        run_copies(kv)
        time.sleep(0.1)
        assert "set" not in store.log  # the backup's L3 write is held behind the read
        store.release.set()
        read.result(5)
        kv.flush()
        assert store.log[0] == "get" and "set" in store.log
        assert kv.tier_stats()["L3"]["write_wait_s"] > 0
    finally:
        store.release.set()


def test_a_flush_lets_writes_past_a_read_that_does_not_end():
    gate = ReadsFirst(max_wait=30)
    with gate.reading():
        done = threading.Event()
        t = threading.Thread(target=lambda: (gate.before_write(), done.set()))
        t.start()
        time.sleep(0.05)
        assert not done.is_set()
        with gate.flushing():
            assert done.wait(2)  # released at once, not after max_wait
            gate.before_write()  # and later writes do not wait either
        t.join(2)
