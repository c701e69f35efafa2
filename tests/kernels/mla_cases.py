"""MLA decode kernel vs a float64 reference, and MLATritonBackend vs MLATorchBackend (prefill, decode,
CUDA-graph-style decode buffers, a mixed pass), plus greedy engine parity on a tiny DeepSeek model.

Cases are `fn(device, dtype)`; `python -m tests.kernels.mla_cases NAME...` prints a JSON result map (run
under TRITON_INTERPRET=1 without a GPU; see tests/kernels/interp.py).
"""
from __future__ import annotations

import json
import sys

import torch

from tests.kernels.backend_cases import _batch, _real_part, check_engine_greedy
from tests.kernels.cases import run as _run_cases
from tests.kernels.cases import same_bytes
from tests.kernels.reference import tolerance
from tierlm.attention.base import ForwardBatch
from tierlm.attention.mla_torch import MLATorchBackend
from tierlm.kvcache.layout import KVLayout
from tierlm.kvcache.pool import KVPool

NUM_LAYERS = 2


def _paged_table(rows: list[int], num_rows: int, max_len: int, page_size: int, num_pages: int,
                 gen: torch.Generator) -> torch.Tensor:
    """Rows `rows` own scattered pages (page 0 stays scratch); the other rows point at random slots."""
    table = torch.randint(0, num_pages * page_size, (num_rows, max_len), generator=gen, dtype=torch.int32)
    free_pages = (torch.randperm(num_pages - 1, generator=gen) + 1).tolist()
    pos = torch.arange(max_len)
    pages_per_row = -(-max_len // page_size)
    for r in rows:
        pages = torch.tensor([free_pages.pop() for _ in range(pages_per_row)])
        table[r] = (pages[pos // page_size] * page_size + pos % page_size).int()
    return table


def reference_mla_decode(q: torch.Tensor, latent: torch.Tensor, table: torch.Tensor, rows: list[int],
                         seqs: list[int], lora: int, scale: float) -> torch.Tensor:
    """float64: per request, softmax(q · latent * scale) · latent[:, :lora] over its first seq_len slots."""
    out = []
    for b, (r, s) in enumerate(zip(rows, seqs)):
        lat = latent.cpu()[table.cpu()[r, :s].long()].double()  # [S, width]
        probs = (torch.einsum("hd,sd->hs", q[b].cpu().double(), lat) * scale).softmax(-1)
        out.append(probs @ lat[:, :lora])
    return torch.stack(out)


def check_mla_decode(device: str, dtype: torch.dtype, *, num_heads: int = 4, lora: int = 32, rope: int = 8,
                     seqs: tuple[int, ...] = (1, 7, 37, 20, 64), page_size: int = 4, max_splits: int = 4,
                     min_chunk: int = 8, block_n: int = 16, seed: int = 0) -> None:
    from tierlm.kernels.mla_decode import mla_decode

    gen = torch.Generator().manual_seed(seed)
    batch, max_len = len(seqs), max(seqs) + 3
    num_pages = 2 * batch * (-(-max_len // page_size)) + 2  # spare pages hold random garbage
    rows = torch.randperm(batch + 3, generator=gen)[:batch].tolist()
    table = _paged_table(rows, batch + 3, max_len, page_size, num_pages, gen)
    latent = torch.randn(num_pages * page_size, lora + rope, generator=gen).to(dtype)
    q = torch.randn(batch, num_heads, lora + rope, generator=gen).to(dtype)
    scale = 0.3
    nan = dict(dtype=torch.float32, device=device)
    out = torch.full((batch, num_heads, lora), float("nan"), dtype=dtype, device=device)
    mid_o = torch.full((batch, num_heads, max_splits, lora), float("nan"), **nan)
    mid_lse = torch.full((batch, num_heads, max_splits), float("nan"), **nan)
    i32 = dict(dtype=torch.int32, device=device)
    mla_decode(q.to(device), latent.to(device), table.to(device), torch.tensor(rows, **i32),
               torch.tensor(seqs, **i32), out, mid_o, mid_lse, scale, min_chunk=min_chunk, block_n=block_n,
               num_warps=4, num_stages=1)
    ref = reference_mla_decode(q, latent, table, rows, list(seqs), lora, scale)
    torch.testing.assert_close(out.cpu().double(), ref, **tolerance(dtype))


def check_mla_backend(device: str, dtype: torch.dtype, *, num_heads: int = 4, lora: int = 32, rope: int = 8,
                      page_size: int = 4, seed: int = 0, kv_dtype: torch.dtype | None = None) -> None:
    """The Triton backend against the torch one on pools of `kv_dtype` (default `dtype`): both store through
    the pool (torch's rounding), so the pools stay equal to the bit and both attend over the same values."""
    from tierlm.attention.mla_triton import MLATritonBackend

    gen = torch.Generator().manual_seed(seed)
    prefix, ext = [0, 9, 21, 4], [13, 1, 6, 30]  # request 1 is a decode-like extend of one token
    rows, max_len, width = [2, 0, 5, 3], 64, lora + rope
    num_pages = 2 * len(rows) * (-(-max_len // page_size)) + 2
    pools = [KVPool(KVLayout.latent(NUM_LAYERS, width, kv_dtype or dtype), num_pages, page_size, torch.device(device))
             for _ in range(2)]
    for layer in range(NUM_LAYERS):  # identical random contents (never zeros) in both pools
        rnd = torch.randn(pools[0]["latent"][layer].shape, generator=gen).to(kv_dtype or dtype)
        pools[0]["latent"][layer].copy_(rnd)
        pools[1]["latent"][layer].copy_(rnd)
    table = _paged_table(rows, 7, max_len, page_size, num_pages, gen)
    table[6] = 0  # last row: the dummy of padded batches -> scratch slot 0
    table = table.to(device)
    params = dict(num_heads=num_heads, head_dim=width, scale=width ** -0.5, value_dim=lora)
    ref = MLATorchBackend(pools[0], table, **params)
    tri = MLATritonBackend(pools[1], table, **params)
    assert tri.supports_cuda_graph()

    def step(batch: ForwardBatch, graph: bool = False) -> None:
        tri.prepare_for_replay(batch) if graph else tri.prepare(batch)
        n_real = sum(batch.extend_lens_cpu[: len(rows)])
        for layer in range(NUM_LAYERS):
            t = len(batch.out_loc)
            q = torch.randn(t, num_heads, width, generator=gen).to(dtype).to(device)
            k = torch.randn(t, width, generator=gen).to(dtype).to(device)
            got = tri.forward(q, k, None, layer, batch)
            want = ref.forward(q[:n_real], k[:n_real], None, layer, _real_part(batch, len(rows)))
            torch.testing.assert_close(got[:n_real].double().cpu(), want.double().cpu(), **tolerance(dtype))
            tail = slice(page_size, None)  # all but the scratch page, which padded rows may write
            assert same_bytes(pools[0]["latent"][layer][tail], pools[1]["latent"][layer][tail])

    step(_batch("prefill", table, rows, prefix, ext))
    seqs = [p + e for p, e in zip(prefix, ext)]
    step(_batch("decode", table, rows, seqs, [1] * len(rows)))
    seqs = [s + 1 for s in seqs]
    tri.init_graph_buffers(max_bs=8, max_len=max_len)
    padded = _batch("decode", table, rows + [6, 6], seqs + [0, 0], [1] * (len(rows) + 2))  # dummy row 6
    step(padded, graph=True)
    seqs = [s + 1 for s in seqs]
    # a mixed step: prefill chunks first, then one-token requests (decodes), which take the decode kernel
    order = [0, 2, 1, 3]
    step(_batch("prefill", table, [rows[i] for i in order], [seqs[i] for i in order], [5, 3, 1, 1]))


def _dec(**kw):
    return lambda device, dtype: check_mla_decode(device, dtype, **kw)


MLA_CASES = {
    "mla_decode_page4": _dec(),
    "mla_decode_page1_one_split": _dec(page_size=1, max_splits=1, seed=1),
    "mla_decode_many_splits_odd_dims": _dec(num_heads=3, lora=24, rope=6, max_splits=16, min_chunk=4,
                                            seqs=(3, 50, 1, 17), seed=2),
    "mla_decode_two_head_blocks": _dec(num_heads=20, seqs=(1, 33), seed=3),
    "mla_backend_page4": lambda d, t: check_mla_backend(d, t),
    "mla_backend_page1": lambda d, t: check_mla_backend(d, t, page_size=1, seed=1),
    "mla_backend_fp8_page4": lambda d, t: check_mla_backend(d, t, seed=2, kv_dtype=torch.float8_e4m3fn),
    "engine_greedy_deepseek_v2": lambda d, t: check_engine_greedy(d, t, arch="deepseek_v2"),
    "engine_greedy_deepseek_v2_fp8": lambda d, t: check_engine_greedy(d, t, arch="deepseek_v2",
                                                                      kv_cache_dtype="fp8"),
}


def run(names: list[str], device: str, dtypes: list[torch.dtype]) -> dict[str, str]:
    return _run_cases(names, device, dtypes, cases=MLA_CASES)


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1:] or list(MLA_CASES), "cpu", [torch.float32])))
