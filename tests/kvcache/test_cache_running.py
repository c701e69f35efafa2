"""`KVCacheManager.cache_running`: a running request's computed pages enter the cache (and, under
write_through, are backed up) before its release, without a page ever having two owners."""
from __future__ import annotations

import torch

from tests.kvcache.tiers import make_tiered, run_copies
from tierlm.kvcache.layout import KVLayout
from tierlm.kvcache.radix import RadixCache

PS = 4


def _kv():
    return make_tiered(PS, 33, 64, KVLayout.gqa(2, 1, 4, torch.float32), max_reqs=4, threads=False,
                       io_backend="torch")


def _running(kv, rid: str, tokens: list[int], target: int):
    got = kv.admit(rid, tokens, target, target, 0)
    assert kv.grow(got.pages, target)
    return got


def test_radix_holds_other_and_path_end():
    tree = RadixCache(2)
    assert tree.path_end([1, 2, 3, 4]) is None and not tree.holds_other([1, 2, 3, 4], [5, 6])
    tree.insert_pages([1, 2, 3, 4], [5, 6])
    assert tree.path_end([1, 2, 3, 4, 9, 9]).pages == [5, 6]
    assert not tree.holds_other([1, 2, 3, 4, 7, 8], [5, 6, 7])  # the same pages, then tokens it lacks
    assert tree.holds_other([1, 2, 3, 4], [5, 9])  # another request's page for the second page


def test_prompt_pages_are_cached_locked_and_backed_up_before_release():
    kv, _, _ = _kv()
    prompt = list(range(100, 112))  # three pages
    got = _running(kv, "a", prompt, 16)
    node, owned = kv.cache_running(got.row, prompt, got.pages, got.node, got.num_prefix_pages)
    assert owned == 3 and node.pages == got.pages[:3] and node.lock_ref == 1
    assert kv.radix.evictable_pages == 0  # in use by the request: never evicted under it
    assert len(kv.backups.queue) == 1 and kv.backups.queue[0].device_pages == got.pages[:3]
    run_copies(kv)
    kv.flush()
    assert kv.radix.match_length(prompt) == 3
    kv.check_no_leak([got.pages])
    # the release finds its pages in place: nothing freed twice, only the decode page is new to the tree
    tokens = prompt + [7, 8, 9, 10]
    kv.release(got.row, tokens, got.pages, node, owned, cache=True)
    run_copies(kv)
    kv.flush()
    assert kv.radix.match_length(tokens) == 4 and node.lock_ref == 0
    kv.check_no_leak()
    kv.close()


def test_an_aborted_request_keeps_its_cached_prompt_and_frees_the_rest():
    kv, _, _ = _kv()
    prompt = list(range(200, 208))
    got = _running(kv, "a", prompt, 16)
    node, owned = kv.cache_running(got.row, prompt, got.pages, got.node, got.num_prefix_pages)
    kv.release(got.row, prompt + [1, 2, 3], got.pages, node, owned, cache=False)
    assert kv.radix.match_length(prompt) == 2 and kv.radix.evictable_pages == 2
    kv.check_no_leak()
    kv.close()


def test_a_prompt_another_request_cached_first_is_left_to_the_release():
    kv, _, _ = _kv()
    prompt = list(range(300, 308))
    a = _running(kv, "a", prompt, 12)
    b = _running(kv, "b", prompt, 12)  # admitted beside `a`, before anything was cached: its own pages
    na, _ = kv.cache_running(a.row, prompt, a.pages, a.node, a.num_prefix_pages)
    nb, ob = kv.cache_running(b.row, prompt, b.pages, b.node, b.num_prefix_pages)
    assert (nb, ob) == (b.node, 0)  # unchanged: the tree holds a's pages for these tokens
    kv.check_no_leak([a.pages, b.pages])
    kv.release(b.row, prompt, b.pages, nb, ob, cache=True)  # b's duplicates are freed here, as ever
    kv.release(a.row, prompt, a.pages, na, 2, cache=True)
    run_copies(kv)
    kv.flush()
    kv.check_no_leak()
    kv.close()


def test_growing_cache_moves_the_lock_down_the_path():
    kv, _, _ = _kv()
    tokens = list(range(400, 416))
    got = _running(kv, "a", tokens, 20)
    n1, o1 = kv.cache_running(got.row, tokens[:8], got.pages, got.node, 0)
    n2, o2 = kv.cache_running(got.row, tokens, got.pages, n1, o1)
    assert (o1, o2) == (2, 4) and n2.parent is n1 and n1.lock_ref == 1 and n2.lock_ref == 1
    assert kv.cache_running(got.row, tokens, got.pages, n2, o2) == (n2, o2)  # nothing new: unchanged
    kv.release(got.row, tokens, got.pages, n2, o2, cache=True)
    assert n1.lock_ref == 0 and kv.radix.evictable_pages == 4
    run_copies(kv)
    kv.flush()
    kv.check_no_leak()
    kv.close()
