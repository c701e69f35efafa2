"""The torch MLA backend stores each new latent at its slot and attends, per request, over the latents of its
whole sequence (prefix + new tokens, causal), equal to a direct float64 computation; the registry picks it
for latent-attention models."""
from __future__ import annotations

import pytest
import torch

import tierlm.attention.mla_torch as mla_torch
from tierlm.attention.base import ForwardBatch
from tierlm.attention.mla_torch import MLATorchBackend
import tierlm.attention.registry as registry
from tierlm.attention.registry import auto_backend, backend_class, backend_names
from tierlm.kvcache.layout import KVLayout
from tierlm.kvcache.pool import KVPool

H, WIDTH, VALUE, LAYERS = 4, 24, 16, 2


def make_batch(prefix: list[int], extend: list[int], table: torch.Tensor) -> ForwardBatch:
    seqs = [p + n for p, n in zip(prefix, extend)]
    out_loc = torch.cat([table[i, p:s].long() for i, (p, s) in enumerate(zip(prefix, seqs))])
    positions = torch.cat([torch.arange(p, s) for p, s in zip(prefix, seqs)])
    indptr = torch.tensor([0] + list(torch.tensor(extend).cumsum(0)), dtype=torch.int32)
    i32 = dict(dtype=torch.int32)
    return ForwardBatch(mode="decode" if set(extend) == {1} else "prefill", input_ids=torch.zeros(len(out_loc)),
                        positions=positions, out_loc=out_loc, req_rows=torch.arange(len(prefix), **i32),
                        prefix_lens=torch.tensor(prefix, **i32), seq_lens=torch.tensor(seqs, **i32), qo_indptr=indptr,
                        extend_lens_cpu=extend, prefix_lens_cpu=prefix, seq_lens_cpu=seqs,
                        req_rows_cpu=list(range(len(prefix))))


def reference(q, latents_per_req, prefix, extend, scale):
    """float64: softmax(q · latent * scale, causal from the prefix) · latent[:, :VALUE], request by request."""
    outs, start = [], 0
    for lat, p, n in zip(latents_per_req, prefix, extend):
        qi = q[start:start + n].double()
        scores = torch.einsum("mhd,sd->mhs", qi, lat.double()) * scale
        allowed = torch.arange(p, p + n)[:, None] >= torch.arange(p + n)[None, :]
        scores = scores.masked_fill(~allowed[:, None, :], float("-inf"))
        outs.append(torch.einsum("mhs,sv->mhv", scores.softmax(-1), lat[:, :VALUE].double()))
        start += n
    return torch.cat(outs).reshape(len(q), H * VALUE)


@pytest.mark.parametrize("prefix, extend", [([0, 0], [5, 3]), ([6, 0, 3], [4, 7, 1]), ([9, 4, 1], [1, 1, 1])])
@pytest.mark.parametrize("block_elements", [1 << 26, 2 * H * 10])  # the second splits queries into blocks
def test_matches_direct_attention(prefix, extend, block_elements, monkeypatch):
    monkeypatch.setattr(mla_torch, "SCORE_ELEMENTS", block_elements)
    gen = torch.Generator().manual_seed(sum(prefix) + len(extend))
    pool = KVPool(KVLayout.latent(LAYERS, WIDTH, torch.float32), 20, 4, torch.device("cpu"))
    seqs = [p + n for p, n in zip(prefix, extend)]
    perm = torch.randperm(pool.num_slots - 4, generator=gen)[:sum(seqs)] + 4  # skip the scratch page
    table = torch.zeros(len(prefix), 32, dtype=torch.int32)
    full = []
    o = 0
    for i, s in enumerate(seqs):
        table[i, :s] = perm[o:o + s].int()
        full.append(torch.randn(s, WIDTH, generator=gen))
        pool.layers[1]["latent"][table[i, :prefix[i]].long()] = full[i][:prefix[i]]  # the cached prefix
        o += s
    batch = make_batch(prefix, extend, table)
    new = torch.cat([f[p:] for f, p in zip(full, prefix)])
    q = torch.randn(len(new), H, WIDTH, generator=gen)
    attn = MLATorchBackend(pool, table, H, WIDTH, 0.3, value_dim=VALUE)
    out = attn.forward(q, new, None, 1, batch)
    assert torch.equal(pool.layers[1]["latent"][batch.out_loc], new)  # stored at the new tokens' slots
    assert not pool.layers[0]["latent"].any()  # other layers untouched
    torch.testing.assert_close(out.double(), reference(q, full, prefix, extend, 0.3), rtol=1e-5, atol=1e-5)


def test_waits_for_the_layer_before_storing():
    calls = []

    class Loads:
        def wait(self, layer):
            calls.append(layer)

    pool = KVPool(KVLayout.latent(LAYERS, WIDTH, torch.float32), 4, 4, torch.device("cpu"))
    table = torch.arange(4, 8, dtype=torch.int32)[None]
    attn = MLATorchBackend(pool, table, H, WIDTH, 0.3, value_dim=VALUE)
    attn.kv_loads = Loads()
    attn.forward(torch.randn(2, H, WIDTH), torch.randn(2, WIDTH), None, 1, make_batch([0], [2], table))
    assert calls == [1] and not attn.supports_cuda_graph()


def test_registry_by_attention_kind(monkeypatch):
    assert backend_class("torch", "mla") is MLATorchBackend
    assert backend_names("mla") == ("torch", "triton") and "triton" in backend_names()
    assert backend_class("torch").__name__ == "TorchNativeBackend"
    for kind in ("gqa", "mla"):  # auto resolves, on any device, to a backend every kind has
        assert {auto_backend("cuda"), auto_backend("cpu")} == {"triton", "torch"}
        assert all(backend_class(auto_backend(d), kind) for d in ("cuda", "cpu"))
    monkeypatch.setitem(registry._BACKENDS, ("gqa", "gqaonly"), "tierlm.attention.torch_native:TorchNativeBackend")
    with pytest.raises(ValueError, match="--attention-backend: 'gqaonly' has no mla attention .*choose from torch"):
        backend_class("gqaonly", "mla")
    with pytest.raises(ValueError, match="--attention-backend: unknown backend 'nope'"):
        backend_class("nope", "mla")
