"""Counters and leak checks over a `KVCacheManager`: what `/stats` reports per tier, and the invariants that
tests assert after every operation (the radix tree's structure; each page free, cached or owned exactly once,
in every tier)."""
from __future__ import annotations

from typing import Any, Sequence


def tier_stats(kv: Any) -> dict:
    """Per tier: hits, bytes, latency, capacity, evictions, tokens loaded and recomputed; L3 store counters;
    the load-or-recompute estimates (`cost`)."""
    out = kv.metrics.snapshot()
    if kv.tiers is None:
        return out
    ev = kv.evictor
    host_used = kv.tiers.host_pages - kv.host_allocator.num_free
    out["L1"].update(capacity_pages=kv.capacity_pages, evicted_pages=ev.evicted_pages_total,
                     dropped_to_host_pages=ev.device_dropped_pages_total,
                     dropped_while_copying_pages=ev.reused_pages_total)
    out["L2"].update(capacity_pages=kv.tiers.host_pages, used_pages=host_used,
                     capacity_bytes=kv.tiers.host_pages * kv.tiers.page_bytes,
                     evicted_pages=ev.host_evicted_pages_total,
                     write_policy=kv.backups.policy, io_backend=kv.io.backend, pinned=kv.tiers.pinned,
                     eviction_policy=kv.retention.policy, eviction_order=kv.retention.current,
                     eviction_order_flips=kv.retention.flips, eviction_score=kv.retention.score)
    if kv.store is not None:
        out["L3"].update(store=kv.store.stats(), io_errors=kv.io.store_errors,
                         write_policy=kv.backups.storage_policy, dropped_write_pages=kv.io.l3_dropped_pages,
                         write_wait_s=kv.io.gate.write_wait_s,
                         write_gate=kv.backups.gate.snapshot() if kv.backups.gate is not None else None)
    out["backups"].update(kv.io.transfer.backup_counts())
    out["cost"] = kv.cost.snapshot()
    return out


def count_hits(kv: Any, request_id: str, match: Any, unloaded: int) -> int:
    """Tokens served per tier, and those of lower-tier hits recomputed instead (`unloaded` host pages of
    the match, L3 pages the prefetch left in the store); returns the tokens served from L3 (the last ones
    of the match's host pages)."""
    if match is None:
        return 0
    ps = kv.page_size
    # a request rejoining after a split matches its own head: counted when it was first admitted
    own = kv.prefetcher.split.own_tokens.pop(request_id, 0) if getattr(kv, "prefetcher", None) else 0
    kv.metrics.record_hit("L1", max(0, len(match.pages) * ps - own))
    if kv.tiers is None:
        return 0
    loaded, host = match.num_host_pages * ps, (match.num_host_pages + unloaded) * ps
    fetched = kv.prefetcher.fetched_tokens.pop(request_id, 0) if kv.prefetcher else 0
    left = kv.prefetcher.unfetched_tokens.pop(request_id, 0) if kv.prefetcher else 0
    l3 = min(fetched, host)  # fetched pages follow the L1/L2 match the prefetch started from
    l2 = min(loaded, host - l3)  # loaded from the first host pages: L2's come first
    per_token = kv.tiers.page_bytes // ps
    kv.metrics.record_hit("L2", l2, l2 * per_token)
    kv.metrics.record_hit("L3", loaded - l2, (loaded - l2) * per_token)
    kv.metrics.record_recomputed("L2", host - l3 - l2)
    kv.metrics.record_recomputed("L3", l3 - (loaded - l2) + left)
    return loaded - l2


def check_tree(tree: Any) -> None:
    """Raise AssertionError if a `RadixCache`'s structure or page accounting is inconsistent (for tests)."""
    seen: set[int] = set()
    seen_host: set[int] = set()
    evictable = protected = 0
    for node in tree.nodes():
        assert node.parent.children.get(node.key[:tree.page_size]) is node, "parent link broken"
        assert node.pages is not None or node.host_pages is not None, "node lives in no tier"
        assert len(node.key) == node.size * tree.page_size > 0, "key/pages length mismatch"
        if node.pages is not None and node.host_pages is not None:
            assert len(node.pages) == len(node.host_pages), "device/host page counts differ"
        assert node.pages is None or node.parent is tree.root or node.parent.pages is not None, (
            "device-resident node under a host-only parent")
        assert node.lock_ref >= sum(c.lock_ref for c in node.children.values()), "lock count below children's"
        for p in node.pages or ():
            assert p not in seen, f"page {p} owned by two nodes"
            seen.add(p)
        for p in node.host_pages or ():
            assert p not in seen_host, f"host page {p} owned by two nodes"
            seen_host.add(p)
        if node.lock_ref == 0:
            evictable += node.num_pages
        else:
            protected += node.num_pages
    assert (evictable, protected) == (tree.evictable_pages, tree.protected_pages), "page counters drifted"


def check_no_leak(kv: Any, live_pages: Sequence[list[int]] = ()) -> None:
    """Raise AssertionError unless every device page is free, cached or owned by a live request exactly once,
    and every host page is free, in the tree or held by a prefetch exactly once."""
    owned: list[int] = [p for pages in live_pages for p in pages]
    cached = kv.radix.all_pages() if kv.radix else set()
    if kv.radix:
        check_tree(kv.radix)
    free = kv.allocator.free_pages()
    live = set(owned) - cached
    assert not (free & (cached | live)), "a free page is also in use"
    assert len(free) + len(cached | live) == kv.capacity_pages, (
        f"leak: {kv.capacity_pages - len(free) - len(cached | live)} pages unaccounted")
    if kv.tiers is None:
        return
    tree = kv.radix.all_host_pages()
    held = set(kv.prefetcher.held_pages) if kv.prefetcher else set()
    alloc = kv.host_allocator
    hfree = alloc.free_pages()
    assert not (tree & held) and not (hfree & (tree | held)), "a host page has two owners"
    assert len(hfree) + len(tree) + len(held) == alloc.num_pages, (
        f"host leak: {alloc.num_pages - len(hfree) - len(tree) - len(held)} pages unaccounted")
