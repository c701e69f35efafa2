"""The host pool's memory: aligned so that the file store moves pages with O_DIRECT in place."""
from __future__ import annotations

import pytest
import torch

from tierlm.kvcache.host_pool import HostKVPool
from tierlm.kvcache.layout import KVLayout
from tierlm.kvcache.stores import segment
from tierlm.kvcache.stores.file import FileKVStore

LAYOUT = KVLayout.gqa(2, 1, 64, torch.float32)  # 4 tokens = 4 KiB per page


@pytest.mark.parametrize("pages", [1, 3, 64])
def test_pageable_pool_starts_on_a_4k_boundary(pages):
    host = HostKVPool(pages, LAYOUT, page_size=4)
    assert host.buffer.data_ptr() % 4096 == 0
    assert host.buffer.shape == (pages, 4096) and host.buffer.is_contiguous()
    host.buffer[-1].fill_(7)  # the last page is the pool's own memory, not past it
    assert bytes(host.page_bytes(pages - 1)) == b"\x07" * 4096


def test_file_store_moves_aligned_pages_in_place(tmp_path, monkeypatch):
    """Pages of whole blocks go out and come back in one vectored call per run, never through the per-page
    bounce buffer (which keeps one page in flight per thread)."""
    host = HostKVPool(8, LAYOUT, page_size=4)
    host.buffer.copy_(torch.randint(0, 256, host.buffer.shape, dtype=torch.uint8))
    want = host.buffer.clone()
    store = FileKVStore(tmp_path, max_bytes=1 << 30)
    if not store.direct:
        pytest.skip("this file system does not take O_DIRECT")
    store.attach(host)

    def bounce(*_):
        raise AssertionError("a page went through the bounce buffer")
    monkeypatch.setattr(segment, "write_record", bounce)
    monkeypatch.setattr(segment, "read_record", bounce)
    keys = [f"{i:064x}" for i in range(1, 9)]
    assert store.batch_set(keys, list(range(8))) == [True] * 8
    host.buffer.zero_()
    assert store.batch_get(keys, list(range(8))) == [True] * 8
    assert torch.equal(host.buffer, want)
    store.close()
