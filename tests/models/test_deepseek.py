"""DeepSeek-V2/V3: config variants match transformers' logits, so do greedy tokens with every extend
decompressed, the layer pattern and the latent KV layout follow the config, bad configs are one clear error,
routing and rope stay float32 in a bfloat16 model."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.conftest import CPU_OPTS
from tests.engine.test_hf_parity import PROMPTS, hf_greedy, hf_logits, prefill_logits
from tierlm import LLM, SamplingParams
from tierlm.attention.mla_torch import MLATorchBackend
from tierlm.attention.mla_up_proj import LatentForms
from tierlm.engine.errors import ModelLoadError
from tierlm.models.config import ModelConfig
from tierlm.models.deepseek import DeepseekForCausalLM
from tierlm.models.deepseek_config import DeepseekConfig
from tierlm.models.deepseek_moe import DeepseekMoE, GatedMLP
from tierlm.models.loader import load_weights
from tierlm.utils.tiny_model import make_tiny_model

IDS = [5, 17, 300, 42, 7, 7, 99, 123, 256, 480, 3, 64, 200, 11, 90, 91, 92, 400, 1, 2, 33]
VARIANTS = {
    # softmax routing limited to the best group, low-rank q, biased projections
    "v2_grouped": ("deepseek_v2", dict(topk_method="group_limited_greedy", n_group=2, topk_group=1, q_lora_rank=24,
                                       attention_bias=True, routed_scaling_factor=1.5)),
    # rotate-half rope pairing with YaRN, plain q, every layer MoE with 2 shared experts, no renormalization
    "v3_half_yarn": ("deepseek_v3", dict(rope_interleave=False, q_lora_rank=None, first_k_dense_replace=0,
                                         n_shared_experts=2, norm_topk_prob=False,
                                         rope_scaling={"rope_type": "yarn", "factor": 4.0, "mscale": 0.707,
                                                       "mscale_all_dim": 0.707,
                                                       "original_max_position_embeddings": 128})),
}


def load(model_dir) -> DeepseekForCausalLM:
    model = DeepseekForCausalLM(ModelConfig.from_dir(model_dir), 512)
    load_weights(model, model_dir, show_progress=False)
    return model.eval()


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_config_variants_match_transformers(tmp_path, variant):
    arch, overrides = VARIANTS[variant]
    model_dir = make_tiny_model(tmp_path / variant, arch=arch, **overrides)
    ours, ref = prefill_logits(load(model_dir), IDS), hf_logits(model_dir, IDS)
    rel = (ours - ref).norm() / ref.norm()
    assert rel < 1e-4, f"{variant}: relative logits error {rel:.2e}"


def test_layer_pattern_and_latent_layout(tiny_models):
    mc = ModelConfig.from_dir(tiny_models["deepseek_v2"])
    model = DeepseekForCausalLM(mc, 64)
    kinds = [type(layer.mlp) for layer in model.model.layers]
    assert kinds == [GatedMLP, DeepseekMoE, DeepseekMoE]  # first_k_dense_replace = 1
    moe = model.model.layers[1].mlp
    assert tuple(moe.experts_gate_up.shape) == (4, 2 * 32, 64) and tuple(moe.experts_down.shape) == (4, 64, 32)
    assert moe.shared_experts is not None and moe.top_k == 2
    layout = DeepseekForCausalLM.kv_layout(mc, torch.bfloat16)
    assert layout.describe() == [[["latent", [32 + 8], "bfloat16"]]] * 3  # kv_lora_rank + qk_rope_head_dim
    every_other = ModelConfig.from_dict({**mc.raw, "moe_layer_freq": 2, "first_k_dense_replace": 0})
    assert [DeepseekConfig.from_model_config(every_other).is_moe_layer(i) for i in range(3)] == [True, False, True]


@pytest.mark.parametrize("key, value, message", [
    ("kv_lora_rank", 0, "kv_lora_rank must be a positive integer, got 0"),
    ("q_lora_rank", "big", "q_lora_rank must be a positive integer or null, got 'big'"),
    ("num_experts_per_tok", 9, r"num_experts_per_tok \(9\) exceeds n_routed_experts \(4\)"),
    ("n_group", 3, r"n_group \(3\) must divide n_routed_experts \(4\)"),
    ("routed_scaling_factor", "x", "routed_scaling_factor must be a positive number, got 'x'"),
    ("hidden_act", "gelu", "hidden_act 'gelu' is not supported"),
    ("quantization_config", {"quant_method": "fp8"}, "quantized checkpoints .* are not supported"),
])
def test_bad_config_is_one_clear_error(tiny_models, key, value, message):
    raw = json.loads((tiny_models["deepseek_v3"] / "config.json").read_text())
    with pytest.raises(ModelLoadError, match=f"config.json: {message}"):
        DeepseekConfig.from_model_config(ModelConfig.from_dict({**raw, key: value}))


def test_unknown_v2_topk_method(tiny_models):
    raw = json.loads((tiny_models["deepseek_v2"] / "config.json").read_text())
    with pytest.raises(ModelLoadError, match="topk_method 'noaux_tc' is not supported"):
        DeepseekConfig.from_model_config(ModelConfig.from_dict({**raw, "topk_method": "noaux_tc"}))


def test_missing_expert_tensor_is_named(tiny_models, tmp_path):
    src = tiny_models["deepseek_v3"]
    for f in src.iterdir():
        if f.suffix != ".safetensors":
            (tmp_path / f.name).write_bytes(f.read_bytes())
    tensors = load_file(src / "model.safetensors")
    del tensors["model.layers.2.mlp.experts.3.up_proj.weight"]
    save_file(tensors, tmp_path / "model.safetensors")
    model = DeepseekForCausalLM(ModelConfig.from_dir(tmp_path), 64)
    with pytest.raises(ModelLoadError, match=r"lacks tensor\(s\): model.layers.2.mlp.experts.3.up_proj.weight$"):
        load_weights(model, tmp_path, show_progress=False)


def test_engine_uses_the_torch_mla_backend_on_cpu_and_triton_needs_cuda(tiny_models, monkeypatch):
    llm = LLM(str(tiny_models["deepseek_v3"]), **CPU_OPTS)  # auto: torch on CPU (Triton MLA is CUDA's default)
    assert type(llm.engine.worker.runner.attn) is MLATorchBackend
    assert llm.engine.worker.runner.graphs is None
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="--attention-backend triton needs a CUDA device"):
        LLM(str(tiny_models["deepseek_v3"]), **{**CPU_OPTS, "attention_backend": "triton"})


def test_bfloat16_keeps_routing_and_rope_in_float32(tiny_models):
    llm = LLM(str(tiny_models["deepseek_v3"]), **{**CPU_OPTS, "dtype": "bfloat16"})
    model = llm.engine.worker.runner.model
    gate = model.model.layers[1].mlp.gate
    assert gate.weight.dtype == gate.e_score_correction_bias.dtype == torch.float32
    assert model.rotary.cos.dtype == torch.float32 and model.lm_head.weight.dtype == torch.bfloat16
    weights = load_file(tiny_models["deepseek_v3"] / "model.safetensors")
    bias = weights["model.layers.1.mlp.gate.e_score_correction_bias"]
    assert torch.equal(gate.e_score_correction_bias, bias)  # loaded without rounding to bfloat16
    out = llm.generate("the quick brown fox", SamplingParams(temperature=0, max_tokens=6, ignore_eos=True))
    assert len(out[0].token_ids) == 6


def _spy_forms(llm) -> list[int]:
    """Prefix lengths of the requests the engine's MLA backend attends decompressed, appended as it does."""
    attn, prefixes = llm.engine.worker.runner.attn, []
    run = attn.attend_decompressed

    def spy(q, out, layer, batch, i, start):
        prefixes.append(batch.prefix_lens_cpu[i])
        run(q, out, layer, batch, i, start)

    attn.attend_decompressed = spy
    return prefixes


@pytest.mark.parametrize("arch", ["deepseek_v2", "deepseek_v3"])
def test_decompressed_extends_match_transformers(tiny_models, arch):
    """`--mla-extend-form decompressed`: every extend decompressed (prefills, then prefix-cache hits in a second
    round), decodes absorbed; the engine's greedy tokens equal transformers'."""
    llm = LLM(str(tiny_models[arch]), **CPU_OPTS, mla_extend_form="decompressed")
    assert llm.engine.worker.runner.attn.forms == LatentForms(min_work=0)
    prefixes = _spy_forms(llm)
    ids = [llm.tokenizer.encode(p) for p in PROMPTS]
    ref = hf_greedy(tiny_models[arch], ids, 12)
    for round_ in range(2):
        outs = llm.generate(ids, SamplingParams(temperature=0, max_tokens=12))
        assert [o.token_ids for o in outs] == ref, f"round {round_}"
    assert prefixes.count(0) >= len(PROMPTS) and max(prefixes) > 0


@pytest.mark.parametrize("form", ["auto", "absorbed"])
def test_short_or_absorbed_extends_stay_absorbed(tiny_models, form):
    """The default decompresses only extends of at least 2^20 (new tokens x sequence); 'absorbed' never."""
    llm = LLM(str(tiny_models["deepseek_v2"]), **CPU_OPTS, mla_extend_form=form)
    assert llm.engine.worker.runner.attn.forms == LatentForms.named(form)
    prefixes = _spy_forms(llm)
    llm.generate([list(range(3, 40))], SamplingParams(temperature=0, max_tokens=4))
    assert prefixes == []


def test_yarn_without_a_factor_takes_the_context_ratio(tiny_models, tmp_path):
    """A YaRN rope_scaling with no `factor` (the ratio of max_position_embeddings to the original length stands
    for it) loads and serves with the rotation and softmax scale of that ratio written out as the factor.
    (transformers 5 refuses such a config, so the tokenizer is skipped.)"""
    cfg = json.loads((tiny_models["deepseek_v2"] / "config.json").read_text())
    rope = dict(cfg.pop("rope_scaling", None) or cfg["rope_parameters"])
    assert rope["factor"] == 4.0 and rope["original_max_position_embeddings"] * 4 == cfg["max_position_embeddings"]
    outs, scales = [], []
    for name, scaling in (("explicit", rope), ("implied", {k: v for k, v in rope.items() if k != "factor"})):
        path = tmp_path / name
        path.mkdir()
        for f in tiny_models["deepseek_v2"].iterdir():
            if f.name != "config.json":
                (path / f.name).symlink_to(f)
        (path / "config.json").write_text(json.dumps({**cfg, "rope_parameters": scaling}))
        scales.append(DeepseekConfig.from_model_config(ModelConfig.from_dir(path)).softmax_scale)
        llm = LLM(str(path), skip_tokenizer_init=True, **CPU_OPTS)
        outs.append(llm.generate([IDS], SamplingParams(temperature=0, max_tokens=8))[0].token_ids)
    assert scales[0] == scales[1] != DeepseekConfig.from_model_config(ModelConfig.from_dir(path)).qk_head_dim ** -0.5
    assert outs[0] == outs[1]
