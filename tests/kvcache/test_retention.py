"""The host tier's eviction order (`HostRetention`): on a cycle of prefixes longer than the tiers hold, LRU
keeps nothing that comes back while keeping what was used again does; where recency pays it is the other
way round; `adaptive` follows whichever its shadows say would have held more, and random tier operations
under the reused order never leak a page."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.kvcache.test_tier_paths import GREEDY, PROMPTS, TIER_OPTS, make
from tests.kvcache.test_tier_paths import hits as tier_hits
from tests.kvcache.test_tiered_property import OPS, run_ops
from tierlm.kvcache.radix import RadixNode
from tierlm.kvcache.retention import (AGE_PERIODS, BLOCK_TOKENS, HostRetention, ShadowLRU, ShadowReused,
                                      reused)


def cycle(n: int, rounds: int) -> list[int]:
    return [i for _ in range(rounds) for i in range(n)]


def recency(n: int, gap: int) -> list[int]:
    """Each new item comes back once, `gap` new items later, then never again."""
    out = []
    for i in range(n):
        out.append(1000 + i)
        if i >= gap:
            out.append(1000 + i - gap)
    return out


def hits(shadow, trace: list[int]) -> int:
    return sum(shadow.access(x) for x in trace)


def test_shadows_on_a_cycle_longer_than_the_cache():
    trace = cycle(30, 5)
    assert hits(ShadowLRU(20), trace) == 0  # every item is evicted just before it comes back
    assert hits(ShadowReused(20), trace) >= 4 * 18  # a fixed part of the cycle is held and hit every round


def test_shadows_where_recency_pays():
    trace = recency(300, 3)
    assert hits(ShadowLRU(20), trace) == 297
    assert hits(ShadowReused(20), trace) < 30  # the newest copies go first: the one about to come back


def test_adaptive_follows_the_shadow_that_would_have_held_more():
    r = HostRetention("adaptive", 20 * BLOCK_TOKENS, page_size=1)  # 20 blocks
    assert r.current == "lru"
    for prompt in one_block_prompts(cycle(30, 6)):
        r.observe(prompt)
    assert (r.current, r.flips) == ("reused", 1) and r.score > 0
    for prompt in one_block_prompts(recency(600, 3)):
        r.observe(prompt)
    assert (r.current, r.flips) == ("lru", 2) and r.score < 0


def test_lru_never_changes_order_and_unknown_policies_are_refused():
    r = HostRetention("lru", 20 * BLOCK_TOKENS, page_size=1)
    for prompt in one_block_prompts(cycle(30, 6)):
        r.observe(prompt)
    assert (r.current, r.flips, r.score) == ("lru", 0, 0)
    with pytest.raises(ValueError, match="--hicache-eviction-policy"):
        HostRetention("mru", 20, page_size=1)


def test_blocks_are_whole_prefixes():
    """A block is known by the tokens before it too: the same block after another prefix is another block;
    a prompt's last partial block is not counted."""
    r = HostRetention("adaptive", 1000, page_size=16)
    lru, _ = r.shadows
    a, b = list(range(BLOCK_TOKENS)), [7] * BLOCK_TOKENS
    r.observe(a + b + [1, 2, 3])
    r.observe(b + b)
    assert len(lru.blocks) == 4 and lru.access(hash((hash((0, tuple(a))), tuple(b))))


def one_block_prompts(trace: list[int]) -> list[list[int]]:
    return [[x] * BLOCK_TOKENS for x in trace]


def block(x: int) -> int:
    """The shadows' name of the one block of the prompt `[x] * BLOCK_TOKENS`."""
    return hash((0, tuple([x] * BLOCK_TOKENS)))


def test_what_the_reused_order_kept_ages_out_when_the_workload_moves_on():
    """Cycle A until the shadow keeps part of it, then cycle B of other blocks: without ageing the kept part
    of A would hold the room forever and B would never be hit; A's blocks go stale after AGE_PERIODS
    periods and B takes their place."""
    r = HostRetention("adaptive", 20 * BLOCK_TOKENS, page_size=1)
    _, kept = r.shadows
    for prompt in one_block_prompts(cycle(30, 6)):
        r.observe(prompt)
    assert r.current == "reused"
    b = [100 + i for i in range(30)]
    for prompt in one_block_prompts(b * (AGE_PERIODS + 3)):
        r.observe(prompt)
    held = set(kept.fresh) | set(kept.protected)
    assert not held & {block(x) for x in range(30)}  # A has gone
    assert len(held & {block(x) for x in b}) >= 15  # and B is held


def test_reused_order_takes_never_used_copies_newest_first_then_the_least_recently_used():
    r = HostRetention("adaptive", 20, page_size=1)
    r.current = "reused"
    old = RadixNode(last_access=5, host_since=5)  # never used since its host copy was made
    new = RadixNode(last_access=9, host_since=9)
    used_early = RadixNode(last_access=7, host_since=2)
    used_late = RadixNode(last_access=8, host_since=3)
    order = sorted([old, new, used_early, used_late], key=r.key)
    assert order == [new, old, used_early, used_late]
    r._starts.extend([6] * AGE_PERIODS)  # periods have passed: a use or a copy before clock 6 is stale
    assert r.horizon == 6
    assert sorted([old, new, used_early, used_late], key=r.key) == [old, new, used_early, used_late]
    r.current = "lru"
    assert sorted([old, new, used_early, used_late], key=r.key) == [old, used_early, used_late, new]


def reused_order(kv) -> None:
    kv.retention.current, kv.retention.epoch = "reused", kv.retention.epoch + 1


@settings(max_examples=60, deadline=None)
@given(ops=OPS, page_size=st.sampled_from([1, 2]), policy=st.sampled_from(["write_through", "write_back"]),
       with_store=st.booleans())
def test_random_tier_operations_under_the_reused_order_never_leak(ops, page_size, policy, with_store):
    run_ops(ops, page_size, policy, threads=False, with_store=with_store, prepare=reused_order)


def test_a_copy_fetched_from_l3_is_not_reused_by_the_request_it_was_fetched_for(tiny_qwen3, tmp_path):
    """A restarted engine serves prompts from L3: the host copies fetched for them count as made when their
    request releases them (under the reused order each fetched copy would otherwise outrank the copies the
    host tier keeps because they came back). Served again from host memory, those copies are reused."""
    store = f"file://{tmp_path / 'kv'}"
    first = make(tiny_qwen3, **TIER_OPTS, kv_store=store, hicache_storage_write_policy="write_back")
    first.generate(PROMPTS, GREEDY)
    first.close()
    second = make(tiny_qwen3, **TIER_OPTS, kv_store=store, hicache_storage_write_policy="write_back")
    try:
        second.generate(PROMPTS[2:], GREEDY)  # prompts that share no prefix: only a later match is a reuse
        assert tier_hits(second)["L3"] > 0
        tree = second.engine.kv.radix
        host = [n for n in tree.nodes() if n.host_pages is not None]
        assert host and not any(reused(n) for n in host)
        assert second.engine.kv.drop_device_cache() > 0
        second.generate(PROMPTS[2:3], GREEDY)
        assert tier_hits(second)["L2"] > 0 and any(reused(n) for n in tree.nodes() if n.host_pages is not None)
        second.engine.kv.check_no_leak(second.engine.live_pages())
    finally:
        second.close()
