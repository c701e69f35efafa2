"""Pages of any KV layout round-trip bit-exactly device pool -> host pool -> file L3 -> host pool -> device
pool, through the controller, copy executor, page movers and store the engine uses (no model involved:
nothing below the attention backend knows what the bytes are)."""
from __future__ import annotations

import pytest
import torch

from tests.jit.conftest import requires_cxx
from tests.kvcache.tiers import make_tiered, run_copies
from tierlm.kvcache.contracts import Verdict
from tierlm.kvcache.keys import PageHasher, model_fingerprint
from tierlm.kvcache.layout import KVBuffer, KVLayout
from tierlm.kvcache.stores.file import FileKVStore

LAYOUTS = {
    "latent576-bf16": KVLayout.latent(3, 576, torch.bfloat16),
    "latent576-fp32": KVLayout.latent(3, 576, torch.float32),
    "gqa-bf16": KVLayout.gqa(3, 2, 8, torch.bfloat16),
    "mixed": KVLayout((  # layers may differ: the movers only see per-layer byte counts
        (KVBuffer("k", (2, 8), "float16"), KVBuffer("v", (2, 8), "float16")),
        (KVBuffer("latent", (72,), "float32"),))),
}


def test_layout_sizes():
    lat = LAYOUTS["latent576-bf16"]
    assert lat.bytes_per_token(0) == 576 * 2 and lat.page_bytes(4) == 3 * 4 * 576 * 2
    gqa = LAYOUTS["gqa-bf16"]
    assert gqa.bytes_per_token(1) == 2 * 2 * 8 * 2 and gqa.layer_offset(2, 4) == 2 * 4 * 64
    assert LAYOUTS["mixed"].bytes_per_token(1) == 72 * 4
    with pytest.raises(ValueError, match="duplicate"):
        KVLayout(((KVBuffer("k", (1,), "float32"), KVBuffer("k", (1,), "float32")),))
    assert len({model_fingerprint({}, "w", lay, 4) for lay in LAYOUTS.values()}) == len(LAYOUTS)


def _fill(pool, pages: list[int], seed: int) -> None:
    """Random bit patterns (not just random floats: NaN payloads and signed zeros must survive too)."""
    g = torch.Generator().manual_seed(seed)
    for region in pool.regions():
        for p in pages:
            region[p] = torch.randint(0, 256, (region.shape[1],), dtype=torch.uint8, generator=g)


def _page_bytes(pool, pages: list[int]) -> list[torch.Tensor]:
    return [torch.cat([r[p] for r in pool.regions()]) for p in pages]


@pytest.mark.parametrize("io_backend", [pytest.param("jit", marks=requires_cxx), "torch"])
@pytest.mark.parametrize("name", list(LAYOUTS))
def test_roundtrip_through_every_tier(tmp_path, name, io_backend):
    layout, ps = LAYOUTS[name], 4
    store = FileKVStore(tmp_path / "kv", 1 << 30)
    hasher = PageHasher(model_fingerprint({}, "test", layout, ps), ps)
    kv, pool, host = make_tiered(ps, 20, 12, layout, store=store, hasher=hasher, io_backend=io_backend,
                                 threads=False, prefetch_policy="wait_complete", prefetch_threshold=1)
    try:
        tokens = list(range(5 * ps + 1))
        got = kv.admit("a", tokens[:-1], len(tokens), len(tokens), 0)
        assert not isinstance(got, Verdict) and got.pages == []
        assert kv.grow(got.pages, len(tokens))
        _fill(pool, got.pages[:5], seed=len(name))
        expected = _page_bytes(pool, got.pages[:5])
        kv.release(got.row, tokens, got.pages, got.node, 0, cache=True)  # write_through: host + L3
        run_copies(kv)
        kv.flush()
        assert store.stats()["pages_written"] == 5
        assert kv.drop_device_cache() == 5 and kv.drop_host_cache() == 5  # only L3 holds them now
        for p in range(1, pool.num_pages):  # nothing left to find on the device
            for r in pool.regions():
                r[p].zero_()
        kv.prefetch_start("b", tokens[:-1])
        got = kv.admit("b", tokens[:-1], len(tokens), len(tokens), 0)
        while got is Verdict.PREFETCHING:
            kv.poll()
            got = kv.admit("b", tokens[:-1], len(tokens), len(tokens), 0)
        assert not isinstance(got, Verdict) and len(got.pages) == 5
        run_copies(kv)  # the load the step plan carries
        kv.flush()
        assert kv.tier_hits()["L3"]["tokens"] == 5 * ps
        for want, have in zip(expected, _page_bytes(pool, got.pages)):
            assert torch.equal(want, have)
        kv.release(got.row, tokens[:5 * ps], got.pages, got.node, 5, cache=False)
        kv.check_no_leak()
    finally:
        kv.close()
