"""The write gate of storage policy `auto` (`tierlm.kvcache.write_gate`): it closes after a window of writes
that nothing read back while loads do not pay, reopens on reads or on a measurement that says loads pay,
backs off, and never closes for a store whose loads pay or that other engines share."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.kvcache.test_storage_write_policy import SharedMemoryStore
from tests.kvcache.test_tiered_property import OPS, run_ops
from tests.kvcache.tiers import cache_prefixes, make_tiered
from tierlm.kvcache.keys import PageHasher
from tierlm.kvcache.stores.memory import MemoryKVStore
from tierlm.kvcache.write_gate import MAX_BACKOFF, USE_SHARE, WriteGate


class Store:
    """What the gate watches, set by the test: pages served back so far, and whether loads pay."""

    def __init__(self) -> None:
        self.served, self.pays = 0, False


def gate(window: int = 10) -> tuple[WriteGate, Store]:
    s = Store()
    return WriteGate(window, lambda: s.served, lambda: s.pays), s


def writes(g: WriteGate, n: int) -> list[bool]:
    return [g.allow(1) for _ in range(n)]


def test_closes_after_a_window_nothing_read_back_and_backs_off():
    g, s = gate(10)
    assert all(writes(g, 10)) and g.open
    assert not g.allow(1) and g.closings == 1  # the window is over: nothing served, loads do not pay
    assert not any(writes(g, 20)) and g.withheld_pages == 21  # a store that does not pay stays closed
    s.pays = True  # a probe measured the store faster than before
    assert g.allow(1) and g.backoff == 2
    s.pays = False
    assert all(writes(g, 9)) and not g.allow(1) and g.closings == 2
    s.pays = True
    assert not any(writes(g, 19)) and g.allow(1)  # closed for twice the window this time
    assert g.backoff == 4


def test_reads_back_keep_it_open_and_reset_the_backoff():
    g, s = gate(100)
    g.backoff = 8
    writes(g, 100)
    s.served = int(USE_SHARE * 100)  # a twentieth of the window came back from the store
    assert g.allow(1) and g.backoff == 1
    writes(g, 99)
    assert not g.allow(1)  # the next window: nothing came back
    s.served += int(USE_SHARE * 100)  # reads of what the store already holds
    assert g.allow(1) and g.backoff == 1


def test_a_store_whose_loads_pay_is_never_closed():
    g, s = gate(5)
    s.pays = True
    assert all(writes(g, 100)) and g.closings == 0 and g.withheld_pages == 0


def test_backoff_is_bounded():
    g, s = gate(1)
    for _ in range(20):
        s.pays = False
        writes(g, 2)
        s.pays = True
        writes(g, MAX_BACKOFF + 2)
    assert g.backoff == MAX_BACKOFF


def test_auto_withholds_writes_the_store_cannot_pay_for():
    """Host tier of 8 pages, prefixes of 3 pages, an L3 whose measured reads are far slower than prefill:
    one window of 2 pages is written (here by the host tier's evictions, as `auto` starts as write_back),
    then writes are withheld (counted, not marked in the store) and the cache stays consistent."""
    store = MemoryKVStore()
    kv, _, _ = make_tiered(2, 40, 8, store=store, hasher=PageHasher("t", 2), threads=False,
                           storage_write_policy="auto", load_policy="cost")
    try:
        kv.cost.fix(1e9, {"L3": 1.0})  # a page fetches in seconds, a token computes in a nanosecond
        cache_prefixes(kv, 16)
        stats = kv.tier_stats()
        gated = stats["L3"]["write_gate"]
        assert not gated["open"] and gated["closings"] == 1
        assert stats["backups"]["l3_withheld_pages"] == gated["withheld_pages"] > 0
        written = len(store.data)
        assert written == 3  # the window is a quarter of the host tier: the first write crosses it
        assert sum(n.in_store for n in kv.radix.nodes()) * 3 <= written
        kv.check_no_leak()
    finally:
        kv.close()


def test_auto_keeps_writing_a_store_whose_loads_pay():
    store = MemoryKVStore()
    kv, _, _ = make_tiered(2, 40, 8, store=store, hasher=PageHasher("t", 2), threads=False,
                           storage_write_policy="auto", load_policy="cost")
    try:
        kv.cost.fix(1.0, {"L3": 1e12})
        cache_prefixes(kv, 16)
        assert kv.tier_stats()["backups"]["l3_withheld_pages"] == 0
        assert kv.tier_stats()["L3"]["write_gate"]["open"]
    finally:
        kv.close()


def test_no_gate_for_a_shared_store_or_other_policies():
    for store, policy in ((SharedMemoryStore(), "auto"), (MemoryKVStore(), "write_through")):
        kv, _, _ = make_tiered(2, 40, 8, store=store, hasher=PageHasher("t", 2), threads=False,
                               storage_write_policy=policy, load_policy="cost")
        try:
            kv.cost.fix(1e9, {"L3": 1.0})
            cache_prefixes(kv, 16)
            assert kv.tier_stats()["L3"]["write_gate"] is None
            assert kv.tier_stats()["backups"]["l3_withheld_pages"] == 0
        finally:
            kv.close()


def test_an_unmeasured_store_does_not_count_as_paying():
    """Until a read of the store was measured nothing says its loads pay: after one window that nothing read
    back the gate closes (under "always-load" a store always counts as paying)."""
    kv, _, _ = make_tiered(2, 40, 8, store=MemoryKVStore(), hasher=PageHasher("t", 2), threads=False,
                           storage_write_policy="auto", load_policy="cost")
    try:
        assert not kv.cost.loads["L3"].samples and not kv.cost.l3_pays()
        cache_prefixes(kv, 16)
        assert kv.tier_stats()["L3"]["write_gate"]["closings"] == 1
    finally:
        kv.close()
    kv, _, _ = make_tiered(2, 40, 8, store=MemoryKVStore(), hasher=PageHasher("t", 2), threads=False,
                           storage_write_policy="auto", load_policy="always-load")
    try:
        assert kv.cost.l3_pays()
        cache_prefixes(kv, 16)
        assert kv.tier_stats()["L3"]["write_gate"]["closings"] == 0
    finally:
        kv.close()


def slow_store(kv) -> None:
    """Loads from the store never pay, and the gate judges every write (a window of one page)."""
    kv.cost.fix(1e9, {"L3": 1.0})
    kv.backups.gate.window = 1


@settings(max_examples=60, deadline=None)
@given(ops=OPS, page_size=st.sampled_from([1, 2]), policy=st.sampled_from(["write_through", "write_back"]))
def test_random_tier_operations_with_writes_withheld_never_leak(ops, page_size, policy):
    """Random tier operations under storage auto with a store whose loads do not pay: where the gate closes
    and withholds writes, no page leaks in any tier."""
    run_ops(ops, page_size, policy, threads=False, with_store=True, prepare=slow_store,
            storage_write_policy="auto", load_policy="cost")
