"""Greedy outputs and prefill logits match Hugging Face transformers on the same checkpoint."""
from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from tests.conftest import CPU_OPTS
from tierlm import LLM, SamplingParams
from tierlm.attention.base import ForwardBatch
from tierlm.attention.mla_torch import MLATorchBackend
from tierlm.attention.torch_native import TorchNativeBackend
from tierlm.kvcache.pool import KVPool
from tierlm.utils.tiny_model import make_tiny_model

PROMPTS = [
    "the quick brown fox",
    "the quick brown fox jumps over the lazy dog",
    "the quick brown fox jumps over the lazy dog while a small cache keeps",
    "hello",
    "paris is the capital of france and berlin is",
    "paris is the capital of",
    "one two three four five six seven eight nine ten eleven twelve numbers count up",
    "serving models fast means reading bytes once",
    "a",
]


def hf_greedy(model_dir, prompt_ids: list[list[int]], max_new: int) -> list[list[int]]:
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    outs = []
    for ids in prompt_ids:
        with torch.no_grad():
            gen = model.generate(torch.tensor([ids]), max_new_tokens=max_new, do_sample=False, eos_token_id=0,
                                 pad_token_id=0)
        outs.append(gen[0, len(ids):].tolist())
    return outs


ARCHS = ["llama", "qwen2", "qwen3", "deepseek_v2", "deepseek_v3"]


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_matches_transformers(tiny_models, arch):
    llm = LLM(str(tiny_models[arch]), **CPU_OPTS)
    ids = [llm.tokenizer.encode(p) for p in PROMPTS]
    ours = llm.generate(ids, SamplingParams(temperature=0, max_tokens=24))
    ref = hf_greedy(tiny_models[arch], ids, 24)
    for i, (o, r) in enumerate(zip(ours, ref)):
        assert o.token_ids == r, f"{arch} prompt {i}: {o.token_ids} != {r}"
        assert o.finish_reason == ("stop" if r and r[-1] == 0 else "length")


def prefill_logits(model, ids: list[int]) -> torch.Tensor:
    """Logits of one whole-prompt prefill through a fresh torch backend of the model's attention kind."""
    n, mc = len(ids), model.config
    pool = KVPool(model.kv_layout(mc, torch.float32), n + 2, 1, torch.device("cpu"))
    table = torch.arange(1, n + 1, dtype=torch.int32)[None, :]
    if getattr(model, "attention_kind", "gqa") == "mla":
        attn = MLATorchBackend(pool, table, **model.attention_params())
    else:
        attn = TorchNativeBackend(pool, table, mc.num_heads, mc.head_dim, mc.head_dim ** -0.5)
    batch = ForwardBatch(mode="prefill", input_ids=torch.tensor(ids), positions=torch.arange(n),
                         out_loc=torch.arange(1, n + 1), req_rows=torch.tensor([0], dtype=torch.int32),
                         prefix_lens=torch.tensor([0], dtype=torch.int32),
                         seq_lens=torch.tensor([n], dtype=torch.int32),
                         qo_indptr=torch.tensor([0, n], dtype=torch.int32),
                         extend_lens_cpu=[n], prefix_lens_cpu=[0], seq_lens_cpu=[n], req_rows_cpu=[0])
    with torch.no_grad():
        return model.compute_logits(model(batch, attn))


def hf_logits(model_dir, ids: list[int]) -> torch.Tensor:
    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return hf(torch.tensor([ids])).logits[0].float()


@pytest.mark.parametrize("arch", ARCHS)
def test_prefill_logits_match_transformers(tiny_models, arch):
    llm = LLM(str(tiny_models[arch]), **CPU_OPTS)
    ids = llm.tokenizer.encode(PROMPTS[2])
    ours = prefill_logits(llm.engine.worker.runner.model, ids)
    ref = hf_logits(tiny_models[arch], ids)
    rel = (ours - ref).norm() / ref.norm()
    assert rel < 1e-4, f"{arch}: relative logits error {rel:.2e}"
    assert torch.allclose(ours, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("scaling", [
    {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8},
    {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 16, "beta_fast": 8,
     "attention_factor": 1.2},
])
def test_yarn_scaled_dense_model_matches_transformers(tmp_path, scaling):
    """A dense model under a YaRN rope scaling (as Qwen3's long-context configs set it), with prompts and outputs
    past the original context so the interpolated frequencies and the cos/sin factor both count."""
    model = make_tiny_model(tmp_path / "m", arch="qwen3", rope_scaling=scaling)
    llm = LLM(str(model), **CPU_OPTS)
    ids = [llm.tokenizer.encode(p) for p in PROMPTS[1::3]]
    ours = llm.generate(ids, SamplingParams(temperature=0, max_tokens=24))
    assert [o.token_ids for o in ours] == hf_greedy(model, ids, 24)
    logits, ref = prefill_logits(llm.engine.worker.runner.model, ids[0]), hf_logits(model, ids[0])
    assert torch.allclose(logits, ref, rtol=1e-4, atol=1e-4)
