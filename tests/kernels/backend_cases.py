"""TritonBackend vs TorchNativeBackend on the same KV pool: prefill with prefixes, decode, graph-buffer decode,
and a mixed pass (prefill chunks followed by one-token requests).

Cases are `fn(device, dtype)`; `python -m tests.kernels.backend_cases NAME...` prints a JSON result map
(run under TRITON_INTERPRET=1 without a GPU; see tests/kernels/interp.py).
"""
from __future__ import annotations

import json
import sys

import torch

from tests.kernels.cases import same_bytes
from tests.kernels.cases import run as _run_cases
from tests.kernels.reference import tolerance
from tierlm.attention.base import ForwardBatch
from tierlm.attention.torch_native import TorchNativeBackend
from tierlm.kvcache.layout import KVLayout
from tierlm.kvcache.pool import KVPool

NUM_LAYERS = 2


def _batch(mode: str, table: torch.Tensor, rows: list[int], prefix: list[int], ext: list[int]) -> ForwardBatch:
    dev = table.device
    seqs = [p + e for p, e in zip(prefix, ext)]
    pos = torch.cat([torch.arange(p, s) for p, s in zip(prefix, seqs)])
    row_of_tok = torch.repeat_interleave(torch.tensor(rows), torch.tensor(ext))
    i32 = dict(dtype=torch.int32, device=dev)
    indptr = torch.tensor([0] + ext, **i32).cumsum(0, dtype=torch.int32)
    return ForwardBatch(mode=mode, input_ids=torch.zeros(len(pos), dtype=torch.int64, device=dev),
                        positions=pos.to(dev), out_loc=table[row_of_tok.to(dev), pos.to(dev)].long(),
                        req_rows=torch.tensor(rows, **i32), prefix_lens=torch.tensor(prefix, **i32),
                        seq_lens=torch.tensor(seqs, **i32), qo_indptr=indptr, extend_lens_cpu=list(ext),
                        prefix_lens_cpu=list(prefix), seq_lens_cpu=seqs, req_rows_cpu=list(rows))


def check_backend(device: str, dtype: torch.dtype, *, num_heads: int, num_kv_heads: int, page_size: int,
                  head_dim: int = 32, seed: int = 0, kv_dtype: torch.dtype | None = None,
                  balanced: int | None = None) -> None:
    """`balanced`: the Triton backend's `decode_balanced` (decode steps of at least that many requests split the
    KV by tokens across the batch, here whatever their lengths); None: the device's default."""
    from dataclasses import replace

    from tierlm.attention.triton_backend import TritonAttentionConfig, TritonBackend

    gen = torch.Generator().manual_seed(seed)
    prefix, ext = [0, 9, 21, 4], [13, 1, 6, 30]  # request 1 is a decode-like extend of one token
    rows = [2, 0, 5, 3]
    max_len = 64
    pages_per_row = -(-max_len // page_size)
    num_pages = 2 * len(rows) * pages_per_row + 2  # spare pages hold random garbage
    layout = KVLayout.gqa(NUM_LAYERS, num_kv_heads, head_dim, kv_dtype or dtype)
    pools = [KVPool(layout, num_pages, page_size, torch.device(device)) for _ in range(2)]
    for layer in range(NUM_LAYERS):  # identical random contents (never zeros) in both pools
        for buf in ("k", "v"):
            rnd = torch.randn(pools[0][buf][layer].shape, generator=gen).to(kv_dtype or dtype)
            pools[0][buf][layer].copy_(rnd)
            pools[1][buf][layer].copy_(rnd)
    table = torch.zeros(7, max_len, dtype=torch.int32)  # last row (6): dummy for padded batches -> slot 0
    free_pages = (torch.randperm(num_pages - 1, generator=gen) + 1).tolist()  # scattered; page 0 = scratch
    pos = torch.arange(max_len)
    for r in rows:
        pages = torch.tensor([free_pages.pop() for _ in range(pages_per_row)])
        table[r] = (pages[pos // page_size] * page_size + pos % page_size).int()
    table = table.to(device)
    scale = head_dim ** -0.5
    ref = TorchNativeBackend(pools[0], table, num_heads, head_dim, scale)
    cfg = TritonAttentionConfig.for_device(torch.device(device))
    cfg = cfg if balanced is None else replace(cfg, decode_balanced=balanced, decode_skew=((0, 1.0),))
    tri = TritonBackend(pools[1], table, num_heads, head_dim, scale, cfg)
    tol = tolerance(dtype)

    def step(batch: ForwardBatch, graph: bool = False) -> None:
        if graph:
            tri.prepare_for_replay(batch)
        else:
            tri.prepare(batch)
        ref.prepare(batch)
        n_real = sum(batch.extend_lens_cpu[: len(rows)])
        for layer in range(NUM_LAYERS):
            t = len(batch.out_loc)
            q = torch.randn(t, num_heads, head_dim, generator=gen).to(dtype).to(device)
            kv = torch.randn(t, 2 * num_kv_heads, head_dim, generator=gen).to(dtype).to(device)
            k, v = kv[:, :num_kv_heads], kv[:, num_kv_heads:]
            got = tri.forward(q, k, v, layer, batch)
            want = ref.forward(q[:n_real], k[:n_real], v[:n_real], layer, _real_part(batch, len(rows)))
            torch.testing.assert_close(got[:n_real].double().cpu(), want.double().cpu(), **tol)
            if not graph:  # into a buffer (as graph pieces take it): the same values, K/V stored again as they were
                into = torch.full_like(got, float("nan"))
                tri.forward_into(q, k, v, layer, batch, into)
                assert torch.equal(into, got)
                ref_into = torch.full_like(want, float("nan"))
                ref.forward_into(q[:n_real], k[:n_real], v[:n_real], layer, _real_part(batch, len(rows)), ref_into)
                assert torch.equal(ref_into, want)
            assert same_bytes(pools[0]["k"][layer][1 * page_size:], pools[1]["k"][layer][1 * page_size:])
            assert same_bytes(pools[0]["v"][layer][1 * page_size:], pools[1]["v"][layer][1 * page_size:])

    step(_batch("prefill", table, rows, prefix, ext))
    seqs = [p + e for p, e in zip(prefix, ext)]
    step(_batch("decode", table, rows, seqs, [1] * len(rows)))
    seqs = [s + 1 for s in seqs]
    tri.init_graph_buffers(max_bs=8, max_len=max_len)
    padded = _batch("decode", table, rows + [6, 6], seqs + [0, 0], [1] * (len(rows) + 2))  # dummy row 6
    padded.variant = tri.decode_variant(seqs)  # the graph runner's choice, from the real requests' lengths
    if balanced is not None:
        assert padded.variant == int(balanced > 0)
    step(padded, graph=True)
    seqs = [s + 1 for s in seqs]
    # a mixed step: prefill chunks first, then one-token requests (decodes), which take the decode kernel
    order = [0, 2, 1, 3]
    step(_batch("prefill", table, [rows[i] for i in order], [seqs[i] for i in order], [5, 3, 1, 1]))


def _real_part(batch: ForwardBatch, n: int) -> ForwardBatch:
    """The first `n` requests of a (possibly padded) batch."""
    if n == batch.batch_size:
        return batch
    t = sum(batch.extend_lens_cpu[:n])
    return ForwardBatch(mode=batch.mode, input_ids=batch.input_ids[:t], positions=batch.positions[:t],
                        out_loc=batch.out_loc[:t], req_rows=batch.req_rows[:n], prefix_lens=batch.prefix_lens[:n],
                        seq_lens=batch.seq_lens[:n], qo_indptr=batch.qo_indptr[:n + 1],
                        extend_lens_cpu=batch.extend_lens_cpu[:n],
                        prefix_lens_cpu=batch.prefix_lens_cpu[:n], seq_lens_cpu=batch.seq_lens_cpu[:n],
                        req_rows_cpu=batch.req_rows_cpu[:n])


def check_engine_greedy(device: str, dtype: torch.dtype, arch: str = "qwen3", kv_cache_dtype: str = "auto") -> None:
    """The offline engine's greedy tokens with the Triton backend equal the torch backend's (tiny model)."""
    import tempfile

    from tierlm import LLM, SamplingParams
    from tierlm.utils.tiny_model import make_tiny_model

    prompts = ["the quick brown fox jumps over", "hello", "paris is the capital of france and berlin is",
               "one two three four five six seven eight nine ten eleven twelve"]
    # 6 tokens: the 13-token prompt still decodes past 16 tokens (two KV splits under the interpreter's
    # min_chunk of 16) and every request crosses a page boundary (page_size 4)
    params = SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_tiny_model(f"{tmp}/{arch}", arch=arch)
        outs = {}
        for backend in ("torch", "triton"):
            llm = LLM(str(model_dir), device=device, dtype=str(dtype).removeprefix("torch."), kv_cache_gb=0.01,
                      page_size=4, attention_backend=backend, kv_cache_dtype=kv_cache_dtype)
            outs[backend] = [r.token_ids for r in llm.generate(prompts, params)]
            if kv_cache_dtype != "auto":  # again from the prefix cache: the hits must give the same tokens
                assert [r.token_ids for r in llm.generate(prompts, params)] == outs[backend], backend
    assert outs["torch"] == outs["triton"], outs


BACKEND_CASES = {
    "backend_gqa2_page1": lambda d, t: check_backend(d, t, num_heads=4, num_kv_heads=2, page_size=1),
    "backend_gqa4_page4": lambda d, t: check_backend(d, t, num_heads=8, num_kv_heads=2, page_size=4, seed=1),
    "backend_gqa1_page4": lambda d, t: check_backend(d, t, num_heads=2, num_kv_heads=2, page_size=4, seed=2),
    "backend_gqa2_balanced": lambda d, t: check_backend(d, t, num_heads=4, num_kv_heads=2, page_size=4, seed=4,
                                                        balanced=2),
    "backend_gqa2_per_request": lambda d, t: check_backend(d, t, num_heads=4, num_kv_heads=2, page_size=4, seed=5,
                                                           balanced=0),
    "engine_greedy_qwen3": check_engine_greedy,
}
# --kv-cache-dtype fp8, on the device only (Triton's interpreter does not round to fp8 as the device does)
FP8_BACKEND_CASES = {
    "fp8_backend_gqa2_page4": lambda d, t: check_backend(d, t, num_heads=4, num_kv_heads=2, page_size=4, seed=3,
                                                         kv_dtype=torch.float8_e4m3fn),
    "fp8_engine_greedy_qwen3": lambda d, t: check_engine_greedy(d, t, kv_cache_dtype="fp8"),
}


def run(names: list[str], device: str, dtypes: list[torch.dtype]) -> dict[str, str]:
    return _run_cases(names, device, dtypes, cases={**BACKEND_CASES, **FP8_BACKEND_CASES})


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1:] or list(BACKEND_CASES), "cpu", [torch.float32])))
