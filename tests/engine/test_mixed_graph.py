"""Whole mixed passes as CUDA graphs: the padded layout (interpreted on the CPU), the tokens on a GPU, and when
an engine captures them."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from tests.conftest import CPU_OPTS
from tests.engine.test_mixed_batches import run_staggered
from tierlm.config import EngineConfig
from tierlm.attention.base import ForwardBatch
from tierlm.engine.mixed_graph import (DECODE_STEP, MixedGraphRunner, mixed_decode_sizes, mixed_graph_align,
                                       mixed_graph_on, token_sizes)
from tierlm.engine.piecewise_graph import token_ladder


def test_padded_mixed_passes_give_the_unpadded_tokens():
    """Eager padded passes (mixed steps; prefill passes without decodes; decode steps) through the Triton backend
    under the interpreter (tests/engine/mixed_graph_cases.py), in a child process: this process never imports
    Triton in interpreter mode."""
    pytest.importorskip("triton")
    from tests.kernels.interp import run_interpreted

    cases = ["qwen3", "qwen3:prefill", "qwen3:burst", "qwen3:decode", "qwen3:warmup"]
    assert run_interpreted("tests.engine.mixed_graph_cases", cases) == dict.fromkeys(cases, "ok")


def _mixed_batch(chunks: list[int], decodes: int) -> ForwardBatch:
    lens = chunks + [1] * decodes
    n, t = len(lens), sum(lens)
    z = torch.zeros(n, dtype=torch.int32)
    return ForwardBatch(mode="prefill", input_ids=torch.zeros(t, dtype=torch.int64), positions=torch.zeros(t),
                        out_loc=torch.zeros(t), req_rows=z, prefix_lens=z, seq_lens=z, qo_indptr=torch.zeros(n + 1),
                        extend_lens_cpu=lens, prefix_lens_cpu=[0] * n, seq_lens_cpu=lens, req_rows_cpu=[0] * n)


def test_a_mixed_step_takes_the_smallest_captured_pass_that_holds_it():
    assert token_sizes(2048) == [256, 512, 768, 1024, 1280, 1536, 1792, 2048] and token_sizes(300) == [256, 300]
    assert token_sizes(100) == [100] and token_sizes(8192)[7:] == [2048, 3072, 4096, 6144, 8192]
    assert mixed_decode_sizes(256) == list(range(16, 257, 16)) and mixed_decode_sizes(20) == [16, 20]
    assert mixed_decode_sizes(8) == [8]
    runner = MixedGraphRunner.__new__(MixedGraphRunner)  # the selection only: no model, no capture
    runner.budget, runner.max_chunks, runner.tokens = 1024, 2, token_sizes(1024)
    runner.sizes, runner.prefill_tokens = [1, 2, 4, 8, 16, 24, 32], []
    runner.attn = type("Attn", (), {"kv_loads": None})()
    shape = runner._decode_size
    assert shape(_mixed_batch([200], 3)) == (256, 4)  # 200 + 4 rows fit 256
    assert shape(_mixed_batch([253], 3)) == (512, 4)  # 257 do not
    assert shape(_mixed_batch([400, 500], 17)) == (1024, 24)
    assert shape(_mixed_batch([500, 200], 17)) == (768, 24)  # 724 rows: the next multiple of 256
    assert shape(_mixed_batch([1001], 17)) is None  # over the budget: the pieces take it
    assert shape(_mixed_batch([10, 10, 10], 1)) is None  # more chunks than captured
    assert shape(_mixed_batch([10], 33)) is None  # more decodes than the largest decode graph
    assert shape(_mixed_batch([100], 0)) is None  # no decodes and no prefill graphs: the pieces take it
    runner.prefill_tokens = token_ladder(1024)
    assert shape(_mixed_batch([100], 0)) == (112, 0)  # the pieces' ladder: 16s to 128
    assert shape(_mixed_batch([300, 400], 0)) == (768, 0)  # 128s from 512
    assert shape(_mixed_batch([1000, 100], 0)) is None  # over the largest prefill graph
    assert shape(_mixed_batch([10] * 3, 0)) is None  # more prompts than captured
    runner.budget, runner.tokens, runner.sizes = 8192, token_sizes(8192), [16, 32]
    assert shape(_mixed_batch([2030], 16)) == (2048, 16)
    assert shape(_mixed_batch([2700, 100], 16)) == (3072, 16)  # pads by 256 of 2816 rows
    assert shape(_mixed_batch([2100], 16)) is None  # would pad 2116 rows to 3072: the pieces take it
    assert shape(_mixed_batch([4000, 4000], 32)) == (8192, 32)
    runner.budget, runner.tokens, runner.sizes = 1024, token_sizes(1024), [1, 2, 4, 8, 16, 24, 32]
    index = torch.tensor([199, 200, 202])  # the chunk's last token, then two of the decodes
    assert runner.rows_of(index, _mixed_batch([200], 3)).tolist() == [199, 252, 254]
    runner.attn.kv_loads = object()  # pages still loading layer by layer: attention must wait, eagerly
    assert shape(_mixed_batch([200], 3)) is None


def test_only_cuda_engines_with_mixed_steps_and_graphs_capture_them():
    assert not mixed_graph_on(EngineConfig(model="unused"))  # only with mixed steps
    base = dict(model="unused", enable_mixed_chunk=True)
    cuda = torch.cuda.is_available()
    assert mixed_graph_on(EngineConfig(**base)) == cuda
    assert mixed_graph_align(EngineConfig(**base)) == (DECODE_STEP if cuda else 1)
    for off in (dict(mixed_cuda_graph=False), dict(cuda_graph=False), dict(compile=True), dict(device="cpu"),
                dict(enable_mixed_chunk=False)):
        assert not mixed_graph_on(EngineConfig(**{**base, **off}))
        assert mixed_graph_align(EngineConfig(**{**base, **off})) == 1


def test_the_scheduler_keeps_aligned_rows_for_the_decodes(tiny_models):
    """With the alignment a captured runner needs, no mixed step's prefill takes more than the budget less the
    decodes rounded up to 8 (CPU engine: the alignment is set by hand)."""
    from tierlm.engine.engine import Engine
    from tierlm.sampling_params import SamplingParams

    engine = Engine(EngineConfig(model=str(tiny_models["qwen3"]), **{**CPU_OPTS, "max_prefill_tokens": 64},
                                 enable_mixed_chunk=True, max_mixed_tokens=12))
    engine.scheduler.mixed = dataclasses.replace(engine.scheduler.mixed, decode_align=8)
    seen: list[tuple[int, int]] = []
    schedule = engine.scheduler.schedule

    def recording():
        batch, refused = schedule()
        if batch is not None and batch.mode == "mixed":
            decodes = sum(not r.prefilling for r in batch.reqs)
            seen.append((decodes, sum(batch.extend_lens) - decodes))
        return batch, refused

    engine.scheduler.schedule = recording
    params = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True, detokenize=False)
    engine.add_request("a", list(range(3, 9)), params)
    for i in range(6):
        engine.step()
        engine.add_request(f"b{i}", list(range(10 + i, 30 + i)), params)
    while engine.has_unfinished():
        engine.step()
    engine.close()
    assert seen and all(prefill <= 12 - 8 * -(-d // 8) for d, prefill in seen), seen


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (graphs)")
@pytest.mark.parametrize("arch,budget", [("qwen3", 24), ("llama", 24), ("qwen3", 300), ("qwen3_moe", 24)])
def test_captured_mixed_passes_give_the_piecewise_tokens(tiny_model_of, arch, budget, monkeypatch):
    """Budget 24: one row count, steps padded up to it; 300: passes of 256 rows, below the budget."""
    runs: list[int] = []
    real = MixedGraphRunner.run
    monkeypatch.setattr(MixedGraphRunner, "run", lambda self, b, i: runs.append(b.batch_size) or real(self, b, i))
    cuda = dict(device="cuda", dtype="float32", attention_backend="triton", kv_cache_gb=0.05,
                enable_mixed_chunk=True, max_mixed_tokens=budget, max_prefill_tokens=6)
    ref, _, _ = run_staggered(tiny_model_of(arch), mixed_cuda_graph=False, prefill_cuda_graph=False, **cuda)
    assert not runs
    got, modes, _ = run_staggered(tiny_model_of(arch), **cuda)
    assert "mixed" in modes and len(runs) >= modes.count("mixed")
    assert got == ref


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (graphs)")
@pytest.mark.parametrize("arch,mixed", [("qwen3", False), ("llama", False), ("qwen3", True), ("qwen3_moe", True)])
def test_captured_prefill_passes_give_the_piecewise_tokens(tiny_model_of, arch, mixed, monkeypatch):
    """Prefill passes (no decodes) replay graphs of their own, with or without mixed steps."""
    runs: list[tuple[int, int]] = []
    real = MixedGraphRunner.run
    monkeypatch.setattr(MixedGraphRunner, "run",
                        lambda self, b, i: runs.append((b.num_multi_token, b.batch_size)) or real(self, b, i))
    cuda = dict(device="cuda", dtype="float32", attention_backend="triton", kv_cache_gb=0.05,
                enable_mixed_chunk=mixed, max_mixed_tokens=24, max_prefill_tokens=6)
    ref, _, _ = run_staggered(tiny_model_of(arch), prefill_cuda_graph=False, mixed_cuda_graph=False, **cuda)
    assert not runs
    got, modes, _ = run_staggered(tiny_model_of(arch), **cuda)
    assert any(size == chunks for chunks, size in runs), runs  # prefill passes ran as whole graphs
    assert got == ref
