"""Extend passes as CUDA graph pieces cut at attention: the token ladder, when they are on, and (CUDA) the
same greedy tokens as eager passes through mixed steps and chunked prefill."""
from __future__ import annotations

import pytest
import torch

from tests.conftest import CPU_OPTS
from tests.engine.test_mixed_batches import run_staggered
from tierlm.config import EngineConfig
from tierlm.engine.cuda_graph import DecodeGraphRunner
from tierlm.engine.engine import Engine
from tierlm.engine.piecewise_graph import PiecewiseGraphRunner, _Cut, piecewise_tokens, token_ladder


@pytest.mark.parametrize("top", [1, 16, 100, 1000, 2048, 8192])
def test_ladder_covers_every_count_with_bounded_padding(top):
    sizes = token_ladder(top)
    assert sizes == sorted(set(sizes)) and sizes[-1] == top and sizes[0] >= 1
    for t in range(1, top + 1, max(1, top // 500)):
        padded = next(s for s in sizes if s >= t)
        assert padded - t < 16 or padded <= t * 5 / 4, (t, padded)


def test_auto_covers_the_mixed_and_prefill_budgets_and_never_beside_compile():
    base = dict(model="builtin:qwen3-0.6b")
    assert piecewise_tokens(EngineConfig(**base)) == 8192  # prefill passes, mixed steps off
    assert piecewise_tokens(EngineConfig(**base, max_prefill_tokens=512)) == 512
    assert piecewise_tokens(EngineConfig(**base, max_prefill_tokens=32768)) == 8192  # bounded start-up
    assert piecewise_tokens(EngineConfig(**base, tp_size=2)) == 0
    mixed = dict(base, enable_mixed_chunk=True, max_mixed_tokens=1024)
    assert piecewise_tokens(EngineConfig(**mixed)) == 8192  # prefill passes before any decode
    assert piecewise_tokens(EngineConfig(**mixed, max_prefill_tokens=512)) == 1024
    assert piecewise_tokens(EngineConfig(**mixed, tp_size=2)) == 1024
    assert piecewise_tokens(EngineConfig(**base, piecewise_cuda_graph_max_tokens=256)) == 256
    assert piecewise_tokens(EngineConfig(**base, enable_mixed_chunk=True, piecewise_cuda_graph_max_tokens=0)) == 0
    assert piecewise_tokens(EngineConfig(**base, enable_mixed_chunk=True, compile=True)) == 0
    with pytest.raises(ValueError, match="piecewise-cuda-graph-max-tokens"):
        EngineConfig(**base, piecewise_cuda_graph_max_tokens=-2).validate()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (graphs)")
@pytest.mark.parametrize("arch", ["qwen3", "llama", "qwen3_moe", "deepseek_v2"])
def test_pieces_give_the_eager_tokens(tiny_model_of, arch, monkeypatch):
    runs: list[int] = []
    real = PiecewiseGraphRunner.run
    monkeypatch.setattr(PiecewiseGraphRunner, "run",
                        lambda self, b, a: runs.append(len(b.input_ids)) or real(self, b, a))
    cuda = dict(device="cuda", dtype="float32", attention_backend="triton", kv_cache_gb=0.05,
                enable_mixed_chunk=True, max_mixed_tokens=9, max_prefill_tokens=6, mixed_cuda_graph=False,
                prefill_cuda_graph=False)
    ref, _, _ = run_staggered(tiny_model_of(arch), piecewise_cuda_graph_max_tokens=0, **cuda)
    assert not runs
    got, modes, _ = run_staggered(tiny_model_of(arch), **cuda)
    assert "mixed" in modes and len(runs) >= modes.count("mixed") + modes.count("prefill")
    assert got == ref


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (graphs)")
def test_decode_batches_beyond_the_decode_graphs_run_as_pieces(tiny_models, monkeypatch):
    runs: list[str] = []
    real = PiecewiseGraphRunner.run
    monkeypatch.setattr(PiecewiseGraphRunner, "run", lambda self, b, a: runs.append(b.mode) or real(self, b, a))
    # `fits` (not only `can_run`): the batch builder leaves a decode batch's inputs to the graph when it fits
    monkeypatch.setattr(DecodeGraphRunner, "fits", lambda self, batch_size: batch_size == 1)
    cuda = dict(device="cuda", dtype="float32", attention_backend="triton", kv_cache_gb=0.05)
    ref, _, _ = run_staggered(tiny_models["qwen3"], every=1, piecewise_cuda_graph_max_tokens=0, **cuda)
    assert not runs
    got, _, _ = run_staggered(tiny_models["qwen3"], every=1, piecewise_cuda_graph_max_tokens=16, **cuda)
    assert "decode" in runs and got == ref


@pytest.mark.parametrize("arch", ["qwen3", "llama", "qwen3_moe", "deepseek_v2"])
def test_a_cut_forward_visits_every_layer_once_in_order(tiny_model_of, arch):
    """The capture walk on the CPU (warm-up mode, no graphs): each layer's attention is one cut, in order,
    the shared output buffer takes its shape (a latent-attention model's: heads x its value head width, it
    passes no v) and the pass returns one hidden row per token."""
    engine = Engine(EngineConfig(model=str(tiny_model_of(arch)), **CPU_OPTS))
    try:
        model = engine.worker.runner.model
        assert model.piecewise_graph_safe
        runner = PiecewiseGraphRunner.__new__(PiecewiseGraphRunner)  # the buffers only: no CUDA here
        runner.model, runner.max_tokens, runner.device, runner.out = model, 8, torch.device("cpu"), None
        runner.ids = torch.arange(8, dtype=torch.int64)
        runner.positions = torch.arange(8, dtype=torch.int64)
        cut = _Cut(runner, 5, None)
        with torch.inference_mode():
            hidden = model(PiecewiseGraphRunner._batch(runner, 5), cut)
        assert cut.layers == list(range(model.config.num_layers))
        assert hidden.shape == (5, model.config.hidden_size)
        cfg = model.config
        width = model.mla.v_head_dim if arch == "deepseek_v2" else cfg.head_dim
        assert runner.out.shape == (8, cfg.num_heads * width) and not cut.inputs  # warm-up: nothing borrowed
    finally:
        engine.close()


@pytest.mark.parametrize("latent", [False, True])
def test_run_feeds_each_layer_its_own_q_k_v_and_the_shared_output(latent):
    """The replay loop on the CPU with stand-in pieces: piece 0, then per cut layer its attention over the
    first T rows of the q/k/v its piece wrote, into the first T rows of the shared output, then the next piece.
    `latent`: the layers pass no v (latent attention), and the backend gets none."""
    calls: list = []

    class Piece:
        def __init__(self, i: int) -> None:
            self.i = i

        def replay(self) -> None:
            calls.append(("piece", self.i))

    class Attn:
        def prepare(self, batch) -> None:
            calls.append(("prepare", batch.input_ids.shape[0]))

        def forward_into(self, q, k, v, layer, batch, out) -> None:
            calls.append(("attn", layer, q.shape[0], k.shape[0], None if v is None else v.shape[0], out.shape[0],
                          float(q[0, 0, 0]), out.data_ptr() == runner.out.data_ptr()))

    runner = PiecewiseGraphRunner.__new__(PiecewiseGraphRunner)
    runner.sizes, runner.device = [4, 8], torch.device("cpu")
    runner.ids, runner.positions = torch.zeros(8, dtype=torch.int64), torch.zeros(8, dtype=torch.int64)
    runner.out = torch.zeros(8, 6)
    inputs = [tuple(torch.full((8, 2, 3), float(layer)) for _ in range(3)) for layer in (3, 7)]
    if latent:
        inputs = [(q, k, None) for q, k, _ in inputs]
    hidden = torch.arange(16.0).view(8, 2)
    runner.graphs = {8: ([Piece(0), Piece(1), Piece(2)], [3, 7], inputs, hidden)}
    batch = PiecewiseGraphRunner._batch(runner, 5)
    got = runner.run(batch, Attn())
    v_rows = None if latent else 5
    assert calls == [("prepare", 5), ("piece", 0), ("attn", 3, 5, 5, v_rows, 5, 3.0, True), ("piece", 1),
                     ("attn", 7, 5, 5, v_rows, 5, 7.0, True), ("piece", 2)]
    assert torch.equal(got, hidden[:5])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (the CUDA array interface)")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float8_e4m3fn])
def test_borrow_views_the_memory_without_holding_it(dtype):
    from tierlm.engine.piecewise_graph import borrow

    qkv = torch.randn(7, 12, device="cuda").to(dtype)
    v = qkv[:, 8:].view(7, 2, 2)[2:]  # a strided view at an offset, as a layer's v is of its fused QKV output
    b = borrow(v)
    assert b.shape == v.shape and b.stride() == v.stride() and b.dtype == dtype and b.data_ptr() == v.data_ptr()
    assert torch.equal(b.float(), v.float())
    qkv.zero_()
    assert not b.float().any()  # the same memory
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    big = torch.empty(1 << 20, device="cuda")
    view = borrow(big)
    del big
    assert torch.cuda.memory_allocated() == before and view.numel() == 1 << 20  # not held by the view
    assert borrow(qkv[:0]).shape == (0, 12)
