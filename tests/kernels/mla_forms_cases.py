"""Latent attention with the model's up-projections (`LatentUpProj`): both MLA backends, each request in the form
`LatentForms` picks (absorbed, or decompressed through SDPA), against float64 attention over the up-projected
latents. Batches mix both forms: decompressed requests first, between and after absorbed ones (so the absorbed
extend requests are sliced or gathered), one-token requests in the middle and at the end (a mixed step's
decodes), prefixes in scattered pages.

Cases are `fn(device, dtype)`; `python -m tests.kernels.mla_forms_cases NAME...` prints a JSON result map (run
under TRITON_INTERPRET=1 without a GPU; see tests/kernels/interp.py).
"""
from __future__ import annotations

import json
import sys

import torch
from torch import nn

from tests.kernels.backend_cases import _batch
from tests.kernels.cases import run as _run_cases
from tests.kernels.mla_cases import _paged_table
from tests.kernels.reference import tolerance
from tierlm.attention.base import ForwardBatch
from tierlm.attention.mla_torch import MLATorchBackend
from tierlm.attention.mla_up_proj import LatentForms, LatentUpProj
from tierlm.kvcache.layout import KVLayout
from tierlm.kvcache.pool import KVPool

NUM_LAYERS, HEADS, NOPE, ROPE, VDIM, LORA = 2, 4, 16, 8, 12, 32
SCALE = (NOPE + ROPE) ** -0.5


def reference(q: torch.Tensor, latent: torch.Tensor, table: torch.Tensor, batch: ForwardBatch,
              weight: torch.Tensor) -> torch.Tensor:
    """float64, per request: keys `[c · W_UK, k_rope]` and values `c · W_UV` of its latents, causal attention of
    its queries (offset by the prefix) → `[T, H, VDIM]`."""
    w = weight.cpu().double().view(HEADS, NOPE + VDIM, LORA)
    outs, start = [], 0
    for i, n in enumerate(batch.extend_lens_cpu):
        prefix, seq = batch.prefix_lens_cpu[i], batch.seq_lens_cpu[i]
        lat = latent.cpu()[table.cpu()[batch.req_rows_cpu[i], :seq].long()].double()
        k_nope = torch.einsum("sc,hnc->shn", lat[:, :LORA], w[:, :NOPE])
        v = torch.einsum("sc,hvc->shv", lat[:, :LORA], w[:, NOPE:])
        qi = q[start:start + n].cpu().double()
        scores = (torch.einsum("thn,shn->ths", qi[..., :NOPE], k_nope)
                  + torch.einsum("thr,sr->ths", qi[..., NOPE:], lat[:, LORA:])) * SCALE
        pos = torch.arange(prefix, seq)
        scores = scores.masked_fill(torch.arange(seq)[None, None, :] > pos[:, None, None], float("-inf"))
        outs.append(torch.einsum("ths,shv->thv", scores.softmax(-1), v))
        start += n
    return torch.cat(outs)


def check_forms(device: str, dtype: torch.dtype, *, backend: str, min_work: int, seed: int = 0,
                page_size: int = 4, kv_dtype: torch.dtype | None = None, max_elements: int = 1 << 28) -> None:
    """One backend, forms picked by `min_work` (0: every extend request decompressed; huge: none), over a
    prefill pass then a mixed pass; each layer's output against `reference` on the pool after the store."""
    gen = torch.Generator().manual_seed(seed)
    rows, max_len = [2, 0, 5, 3, 1], 64
    num_pages = 2 * len(rows) * (-(-max_len // page_size)) + 2
    pool = KVPool(KVLayout.latent(NUM_LAYERS, LORA + ROPE, kv_dtype or dtype), num_pages, page_size,
                  torch.device(device))
    for layer in range(NUM_LAYERS):
        pool["latent"][layer].copy_(torch.randn(pool["latent"][layer].shape, generator=gen).to(kv_dtype or dtype))
    table = _paged_table(rows, 7, max_len, page_size, num_pages, gen).to(device)
    projections = [nn.Linear(LORA, HEADS * (NOPE + VDIM), bias=False) for _ in range(NUM_LAYERS)]
    for p in projections:
        with torch.no_grad():
            p.weight.copy_(torch.randn(p.weight.shape, generator=gen) * LORA ** -0.5)
        p.to(device=device, dtype=dtype).requires_grad_(False)
    up = LatentUpProj(projections, HEADS, NOPE, ROPE, VDIM, LORA)
    params = dict(num_heads=HEADS, head_dim=LORA + ROPE, scale=SCALE, value_dim=VDIM, up_proj=up,
                  forms=LatentForms(min_work=min_work, max_elements=max_elements))
    if backend == "triton":
        from tierlm.attention.mla_triton import MLATritonBackend

        attn = MLATritonBackend(pool, table, **params)
    else:
        attn = MLATorchBackend(pool, table, **params)

    def step(batch: ForwardBatch) -> list[int]:
        attn.prepare(batch)
        for layer in range(NUM_LAYERS):
            t = len(batch.out_loc)
            q = torch.randn(t, HEADS, NOPE + ROPE, generator=gen).to(dtype).to(device)
            k = torch.randn(t, LORA + ROPE, generator=gen).to(dtype).to(device)
            got = attn.forward(q, k, None, layer, batch).view(t, HEADS, VDIM)
            want = reference(q, pool["latent"][layer], table, batch, projections[layer].weight)
            torch.testing.assert_close(got.double().cpu(), want, **tolerance(dtype))
        return attn.decompressed_requests(batch)

    # work (new tokens x sequence): 169, 10, 162, 21, 15 * 43 -> min_work 100 decompresses requests 0, 2, 4
    prefix, ext = [0, 9, 21, 4, 28], [13, 1, 6, 3, 15]
    wide = step(_batch("prefill", table, rows, prefix, ext))
    assert wide == [i for i, (p, e) in enumerate(zip(prefix, ext)) if e * (p + e) >= min_work
                    and up.decompressed_elements(p + e) <= max_elements]
    seqs = [p + e for p, e in zip(prefix, ext)]
    # a mixed step: chunks (decompressed one first) then one-token requests, which always stay absorbed
    order, chunk = [4, 2, 0, 1, 3], [9, 2, 1, 1, 1]
    wide = step(_batch("prefill", table, [rows[i] for i in order], [seqs[i] for i in order], chunk))
    assert all(i < 2 for i in wide)
    for i, n in zip(order, chunk):
        seqs[i] += n
    assert step(_batch("decode", table, rows, seqs, [1] * len(rows))) == []


def _case(**kw):
    return lambda device, dtype: check_forms(device, dtype, **kw)


FORMS_CASES = {
    f"forms_{backend}_{label}": _case(backend=backend, min_work=work, seed=seed)
    for backend in ("torch", "triton")
    for seed, (label, work) in enumerate((("mixed", 100), ("all_decompressed", 0), ("all_absorbed", 1 << 40)))
}
FORMS_CASES["forms_triton_page1_fp8_pool"] = _case(backend="triton", min_work=100, page_size=1, seed=5,
                                                   kv_dtype=torch.float8_e4m3fn)
FORMS_CASES["forms_triton_capped"] = _case(backend="triton", min_work=0, seed=6,
                                           max_elements=30 * HEADS * (NOPE + VDIM + 2 * (NOPE + ROPE)))


def run(names: list[str], device: str, dtypes: list[torch.dtype]) -> dict[str, str]:
    return _run_cases(names, device, dtypes, cases=FORMS_CASES)


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1:] or list(FORMS_CASES), "cpu", [torch.float32])))
