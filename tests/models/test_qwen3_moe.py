"""Qwen3-MoE on CPU in fp32: the expert block and whole model match transformers; greedy outputs do not
depend on the path the KV took (prefix cache, chunked prefill, host tier)."""
from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from tests.conftest import CPU_OPTS
from tests.engine.test_hf_parity import PROMPTS, hf_greedy
from tierlm import LLM, SamplingParams
from tierlm.attention.base import ForwardBatch
from tierlm.attention.torch_native import TorchNativeBackend
from tierlm.kvcache.pool import KVPool
from tierlm.models.qwen3_moe import CausalLM, is_sparse

GREEDY = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)


@pytest.fixture(scope="module")
def hf_model(tiny_qwen3_moe):
    return AutoModelForCausalLM.from_pretrained(tiny_qwen3_moe, dtype=torch.float32).eval()


def test_layer_kinds(tiny_qwen3_moe):
    llm = LLM(str(tiny_qwen3_moe), **CPU_OPTS)
    layers = llm.engine.worker.runner.model.model.layers
    assert [type(layer.mlp).__name__ for layer in layers] == ["MLP", "SparseMoE"]


def test_sparse_layer_rule():
    from dataclasses import replace

    from tierlm.models.config import ModelConfig
    base = ModelConfig("Qwen3MoeForCausalLM", 8, 8, 8, 6, 1, 1, 8, 1e-6, 1e4, num_experts=4, num_experts_per_tok=1,
                       moe_intermediate_size=8)
    assert [is_sparse(base, i) for i in range(6)] == [True] * 6
    step2 = replace(base, decoder_sparse_step=2, mlp_only_layers=(3,))
    assert [is_sparse(step2, i) for i in range(6)] == [False, True, False, False, False, True]
    assert not any(is_sparse(replace(base, num_experts=0), i) for i in range(6))


def test_expert_block_matches_transformers(tiny_qwen3_moe, hf_model):
    ours = LLM(str(tiny_qwen3_moe), **CPU_OPTS).engine.worker.runner.model.model.layers[1].mlp
    ref = hf_model.model.layers[1].mlp
    x = torch.randn(1, 37, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(x[0]), ref(x)[0], rtol=1e-6, atol=1e-6)


def test_greedy_matches_transformers(tiny_qwen3_moe):
    llm = LLM(str(tiny_qwen3_moe), **CPU_OPTS)
    ids = [llm.tokenizer.encode(p) for p in PROMPTS]
    ours = llm.generate(ids, SamplingParams(temperature=0, max_tokens=24))
    ref = hf_greedy(tiny_qwen3_moe, ids, 24)
    for i, (o, r) in enumerate(zip(ours, ref)):
        assert o.token_ids == r, f"prompt {i}: {o.token_ids} != {r}"
    assert len({tuple(r) for r in ref}) > len(ref) // 2, "outputs too alike to tell models apart"


def test_prefill_logits_match_transformers(tiny_qwen3_moe, hf_model):
    llm = LLM(str(tiny_qwen3_moe), **CPU_OPTS)
    model, mc = llm.engine.worker.runner.model, llm.engine.model_config
    ids = llm.tokenizer.encode(PROMPTS[2])
    n = len(ids)
    pool = KVPool(CausalLM.kv_layout(mc, torch.float32), n + 2, 1, torch.device("cpu"))
    table = torch.arange(1, n + 1, dtype=torch.int32)[None, :]
    attn = TorchNativeBackend(pool, table, mc.num_heads, mc.head_dim, mc.head_dim ** -0.5)
    i32 = dict(dtype=torch.int32)
    batch = ForwardBatch(mode="prefill", input_ids=torch.tensor(ids), positions=torch.arange(n),
                         out_loc=torch.arange(1, n + 1), req_rows=torch.tensor([0], **i32),
                         prefix_lens=torch.tensor([0], **i32), seq_lens=torch.tensor([n], **i32),
                         qo_indptr=torch.tensor([0, n], **i32), extend_lens_cpu=[n], prefix_lens_cpu=[0],
                         seq_lens_cpu=[n], req_rows_cpu=[0])
    with torch.no_grad():
        ours = model.compute_logits(model(batch, attn))
        ref = hf_model(torch.tensor([ids])).logits[0].float()
    rel = (ours - ref).norm() / ref.norm()
    assert rel < 1e-4, f"relative logits error {rel:.2e}"
    assert torch.allclose(ours, ref, rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def reference(tiny_qwen3_moe):
    llm = LLM(str(tiny_qwen3_moe), **CPU_OPTS, enable_prefix_cache=False)
    return [o.token_ids for o in llm.generate(PROMPTS, GREEDY)]


def test_prefix_cache_and_chunked_prefill_give_same_tokens(tiny_qwen3_moe, reference):
    llm = LLM(str(tiny_qwen3_moe), **CPU_OPTS, enable_prefix_cache=True, max_prefill_tokens=5)
    for _ in range(2):  # the second round hits the prefix cache
        assert [o.token_ids for o in llm.generate(PROMPTS, GREEDY)] == reference
    assert llm.engine.stats()["tier_hits"]["L1"]["tokens"] > 0
    llm.engine.kv.check_no_leak(llm.engine.live_pages())


def test_host_tier_gives_same_tokens(tiny_qwen3_moe, reference):
    llm = LLM(str(tiny_qwen3_moe), **CPU_OPTS, enable_hicache=True, hicache_prefetch_policy="wait_complete")
    assert [o.token_ids for o in llm.generate(PROMPTS, GREEDY)] == reference
    assert llm.engine.kv.drop_device_cache() > 0
    assert [o.token_ids for o in llm.generate(PROMPTS, GREEDY)] == reference
    assert llm.engine.stats()["tier_hits"]["L2"]["tokens"] > 0
    llm.engine.kv.check_no_leak(llm.engine.live_pages())
    llm.close()
