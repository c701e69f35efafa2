"""Shipped configs (`builtin:NAME`) resolve, parse, and refuse to load without --load-format dummy."""
from __future__ import annotations

import pytest

from tierlm.engine.errors import ModelLoadError
from tierlm.models.config import ModelConfig
from tierlm.models.loader import builtin_configs, resolve_model_dir


def test_shipped_configs_parse():
    assert {"qwen3-0.6b", "llama-3.1-8b", "qwen3-30b-a3b", "deepseek-v2-lite"} <= set(builtin_configs())
    qwen = ModelConfig.from_dir(resolve_model_dir("builtin:qwen3-0.6b", need_weights=False))
    assert (qwen.num_layers, qwen.num_heads, qwen.num_kv_heads, qwen.head_dim) == (28, 16, 8, 128)
    assert qwen.qk_norm and qwen.tie_word_embeddings and qwen.vocab_size == 151936
    llama = ModelConfig.from_dir(resolve_model_dir("builtin:llama-3.1-8b", need_weights=False))
    assert llama.rope_scaling["rope_type"] == "llama3" and llama.eos_token_ids == (128001, 128008, 128009)
    assert (llama.num_layers, llama.hidden_size, llama.num_kv_heads) == (32, 4096, 8)


def test_qwen3_30b_a3b_has_its_published_size():
    """Built on the meta device (no memory): 30.5B parameters, 3.3B of them active per token."""
    import torch

    from tierlm.models.registry import model_class

    mc = ModelConfig.from_dir(resolve_model_dir("builtin:qwen3-30b-a3b", need_weights=False))
    assert (mc.num_layers, mc.hidden_size, mc.num_heads, mc.num_kv_heads, mc.head_dim) == (48, 2048, 32, 4, 128)
    assert (mc.num_experts, mc.num_experts_per_tok, mc.moe_intermediate_size, mc.norm_topk_prob) == (128, 8, 768, True)
    cls = model_class(mc.architecture)
    with torch.device("meta"):
        model = cls(mc, max_positions=mc.max_position_embeddings)
    total = sum(p.numel() for p in model.parameters())
    idle_experts = mc.num_layers * (mc.num_experts - mc.num_experts_per_tok) * 3 * mc.hidden_size * 768
    assert 30.5e9 <= total < 30.6e9 and 3.3e9 <= total - idle_experts < 3.4e9
    assert cls.kv_layout(mc, torch.bfloat16).bytes_per_token_all_layers == 48 * 2 * 4 * 128 * 2


def test_deepseek_v2_lite_config():
    """Latent attention dims, MoE pattern and YaRN of DeepSeek-V2-Lite; its KV is one 576-wide latent a layer."""
    import math

    import torch

    from tierlm.models.deepseek import DeepseekForCausalLM
    from tierlm.models.deepseek_config import DeepseekConfig

    mc = ModelConfig.from_dir(resolve_model_dir("builtin:deepseek-v2-lite", need_weights=False))
    assert (mc.architecture, mc.num_layers, mc.hidden_size, mc.num_heads, mc.vocab_size) == \
        ("DeepseekV2ForCausalLM", 27, 2048, 16, 102400)
    ds = DeepseekConfig.from_model_config(mc)
    assert (ds.q_lora_rank, ds.kv_lora_rank, ds.qk_nope_head_dim, ds.qk_rope_head_dim, ds.v_head_dim) == \
        (None, 512, 128, 64, 128)
    assert (ds.n_routed_experts, ds.num_experts_per_tok, ds.n_shared_experts, ds.moe_intermediate_size) == \
        (64, 6, 2, 1408)
    assert [ds.is_moe_layer(i) for i in range(3)] == [False, True, True] and ds.scoring == "softmax"
    assert mc.rope_scaling["type"] == "yarn" and mc.rope_scaling["factor"] == 40
    layout = DeepseekForCausalLM.kv_layout(mc, torch.bfloat16)
    assert layout.bytes_per_token_all_layers == 27 * 576 * 2
    mscale = 0.1 * 0.707 * math.log(40) + 1.0
    assert ds.softmax_scale == pytest.approx(192 ** -0.5 * mscale ** 2)


def test_builtin_errors():
    with pytest.raises(ModelLoadError, match="unknown builtin config 'nope'"):
        resolve_model_dir("builtin:nope", need_weights=False)
    with pytest.raises(ModelLoadError, match="--load-format dummy"):
        resolve_model_dir("builtin:qwen3-0.6b", need_weights=True)


def test_hub_id_download_failure_is_one_clear_error(monkeypatch):
    import huggingface_hub

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(ModelLoadError, match="could not download model 'org/model' from the hub: OSError"):
        resolve_model_dir("org/model")


def test_hub_id_goes_through_snapshot_download(monkeypatch, tiny_qwen3):
    """A hub id is fetched with huggingface_hub (weights, config, tokenizer files) and then loaded."""
    import huggingface_hub

    from tests.conftest import CPU_OPTS
    from tierlm import LLM, SamplingParams

    calls = []

    def fake_download(repo_id, revision=None, allow_patterns=None):
        calls.append((repo_id, revision, tuple(allow_patterns)))
        return str(tiny_qwen3)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    out = LLM("org/tiny", revision="main", **CPU_OPTS).generate("hello", SamplingParams(max_tokens=2, ignore_eos=True))
    assert len(out[0].token_ids) == 2
    assert calls[0][:2] == ("org/tiny", "main") and "*.safetensors" in calls[0][2]
