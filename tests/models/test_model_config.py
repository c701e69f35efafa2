"""`ModelConfig` from config.json: impossible sizes are refused naming the file and the key."""
from __future__ import annotations

import json

import pytest

from tierlm.engine.errors import ModelLoadError
from tierlm.models.config import MAX_POSITIONS, ModelConfig


def assert_refused(model_dir, tmp_path, key: str, value, message: str) -> None:
    """`model_dir`'s config.json with `key` set to `value` (and dropped from `rope_parameters`, where transformers 5
    also keeps rope fields) is refused at load with `message`, after the file's name."""
    cfg = json.loads((model_dir / "config.json").read_text())
    cfg[key] = value
    cfg.get("rope_parameters", {}).pop(key, None)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match=f"config.json: {message}"):
        ModelConfig.from_dir(tmp_path)


@pytest.mark.parametrize("key, value", [("num_hidden_layers", 0), ("vocab_size", -5), ("hidden_size", 0),
                                        ("num_attention_heads", 0), ("num_key_value_heads", -1),
                                        ("intermediate_size", 0), ("head_dim", -16)])
def test_non_positive_sizes_name_the_key(tiny_qwen3, tmp_path, key, value):
    assert_refused(tiny_qwen3, tmp_path, key, value, f"{key} must be a positive integer, got {value}")


@pytest.mark.parametrize("key, value, message", [
    ("rope_theta", 0, "rope_theta must be a finite number above 0, got 0.0"),
    ("rope_theta", -5, "rope_theta must be a finite number above 0, got -5.0"),
    ("rope_theta", float("nan"), "rope_theta must be a finite number above 0, got nan"),
    ("rms_norm_eps", -1, "rms_norm_eps must be a finite number at least 0, got -1.0"),
    ("rms_norm_eps", float("inf"), "rms_norm_eps must be a finite number at least 0, got inf"),
])
def test_theta_and_norm_epsilon_that_give_nan_are_refused(tiny_qwen3, tmp_path, key, value, message):
    """Such a config loads in transformers and serves NaN rotations or norms: refused naming the key."""
    assert_refused(tiny_qwen3, tmp_path, key, value, message)


@pytest.mark.parametrize("key, value, message", [
    ("eos_token_id", [1, "a"], "eos_token_id must be a token id or a list of them, got 'a'"),
    ("eos_token_id", 2.5, "eos_token_id must be a token id or a list of them, got 2.5"),
    ("tie_word_embeddings", "false", "tie_word_embeddings must be true or false, got 'false'"),
    ("attention_bias", 1, "attention_bias must be true or false, got 1"),
])
def test_fields_of_the_wrong_kind_are_refused(tiny_qwen3, tmp_path, key, value, message):
    """A string "false" read as true, or an end-of-sequence id that can never match: refused naming the key."""
    assert_refused(tiny_qwen3, tmp_path, key, value, f"invalid value: {message}")


@pytest.mark.parametrize("key, value, message", [
    ("quantization_config", {"quant_method": "awq", "bits": 4}, "quantized checkpoints \\(quantization_config, "
                                                                 "'awq'\\) are not supported"),
    ("hidden_act", "gelu_pytorch_tanh", "hidden_act 'gelu_pytorch_tanh' is not supported \\(only silu\\)"),
])
def test_what_no_dense_model_here_computes_is_refused(tiny_qwen3, tmp_path, key, value, message):
    """An AWQ or FP8 checkpoint of a dense model, or another activation: refused at load, not a missing-tensor
    error half-way through the weights or wrong outputs."""
    assert_refused(tiny_qwen3, tmp_path, key, value, message)


def test_tiny_config_is_accepted(tiny_qwen3):
    assert ModelConfig.from_dir(tiny_qwen3).num_layers == 2


def test_dense_config_has_no_experts(tiny_qwen3):
    mc = ModelConfig.from_dir(tiny_qwen3)
    assert (mc.num_experts, mc.num_experts_per_tok, mc.moe_intermediate_size, mc.mlp_only_layers) == (0, 0, 0, ())


def test_moe_fields_from_either_experts_key(tiny_qwen3_moe, tmp_path):
    cfg = json.loads((tiny_qwen3_moe / "config.json").read_text())
    assert "num_local_experts" in cfg  # how transformers writes it; published Qwen3-MoE files say num_experts
    mc = ModelConfig.from_dict(cfg)
    assert (mc.num_experts, mc.num_experts_per_tok, mc.moe_intermediate_size) == (8, 2, 32)
    assert mc.norm_topk_prob and mc.decoder_sparse_step == 1 and mc.mlp_only_layers == (0,)
    cfg["num_experts"] = cfg.pop("num_local_experts")
    assert ModelConfig.from_dict(cfg).num_experts == 8


@pytest.mark.parametrize("key, value, message", [
    ("num_local_experts", 0, "num_experts must be a positive integer, got 0"),
    ("moe_intermediate_size", -1, "moe_intermediate_size must be a positive integer, got -1"),
    ("decoder_sparse_step", 0, "decoder_sparse_step must be a positive integer, got 0"),
    ("num_experts_per_tok", 9, r"num_experts_per_tok must be between 1 and num_experts \(8\), got 9"),
    ("num_experts_per_tok", 0, r"num_experts_per_tok must be between 1 and num_experts \(8\), got 0"),
])
def test_bad_moe_fields_name_the_key(tiny_qwen3_moe, key, value, message):
    cfg = json.loads((tiny_qwen3_moe / "config.json").read_text())
    cfg[key] = value
    with pytest.raises(ModelLoadError, match=f"config.json: {message}"):
        ModelConfig.from_dict(cfg)


@pytest.mark.parametrize("key", ["num_local_experts", "num_experts_per_tok", "moe_intermediate_size"])
def test_missing_moe_field_is_named(tiny_qwen3_moe, key):
    cfg = json.loads((tiny_qwen3_moe / "config.json").read_text())
    del cfg[key]
    name = "num_experts" if key == "num_local_experts" else key
    with pytest.raises(ModelLoadError, match=f"config.json: missing required field '{name}'"):
        ModelConfig.from_dict(cfg)


def test_context_limit_is_the_models_unless_allowed_longer(tiny_qwen3):
    """`--max-model-len` defaults to the model's max_position_embeddings; a longer one is refused, naming the
    flag and the variable that allows it, unless that variable is 1."""
    from tierlm.models.config import ALLOW_LONG_CONTEXT

    mc = ModelConfig.from_dir(tiny_qwen3)
    assert mc.context_limit(None, environ={}) == mc.max_position_embeddings == 512
    assert mc.context_limit(100, environ={}) == 100 and mc.context_limit(512, environ={}) == 512
    with pytest.raises(ValueError, match=f"--max-model-len 513 .*512 tokens.*{ALLOW_LONG_CONTEXT}=1"):
        mc.context_limit(513, environ={ALLOW_LONG_CONTEXT: "0"})
    with pytest.raises(ValueError, match="^The workload is longer than the model's context"):
        mc.context_limit(600, environ={}, what="The workload")
    assert mc.context_limit(300000, environ={ALLOW_LONG_CONTEXT: "1"}) == 300000
    with pytest.raises(ValueError, match=f"--max-model-len {MAX_POSITIONS + 1} is past the longest context served"):
        mc.context_limit(MAX_POSITIONS + 1, environ={ALLOW_LONG_CONTEXT: "1"})  # its rotary table would not fit


@pytest.mark.parametrize("key, value, message", [
    ("max_position_embeddings", MAX_POSITIONS + 1, f"max_position_embeddings {MAX_POSITIONS + 1} is past the longest"),
    ("rope_scaling", {"rope_type": "linear", "factor": 1e9}, "rope_scaling.factor 1000000000.0 stretches the context "
                                                             "to 512000000000 tokens"),
])
def test_contexts_past_any_model_are_refused_at_load(tiny_qwen3, tmp_path, key, value, message):
    """Such a config would size rotary tables of thousands of GiB: refused naming the key, not an allocation
    traceback."""
    assert_refused(tiny_qwen3, tmp_path, key, value, message)


@pytest.mark.parametrize("scaling, context", [
    (None, 512),
    ({"rope_type": "linear", "factor": 2.0}, 1024),
    ({"type": "linear", "factor": 4.0}, 2048),
    ({"rope_type": "yarn", "factor": 40.0, "original_max_position_embeddings": 64}, 2560),
    ({"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 128}, 512),  # never below the stated
    ({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
      "original_max_position_embeddings": 128}, 512),  # Llama 3 states the stretched length itself
])
def test_context_under_rope_scaling(tiny_qwen3, scaling, context):
    """The longest context allowed without the variable, and the default, follow the rope scaling as vLLM derives
    them."""
    cfg = json.loads((tiny_qwen3 / "config.json").read_text())
    cfg["rope_scaling"] = scaling
    mc = ModelConfig.from_dict(cfg)
    assert mc.max_context == context
    assert mc.context_limit(context, environ={}) == context and mc.context_limit(None, environ={}) == context
    with pytest.raises(ValueError, match=f"--max-model-len {context + 1} is longer than the model's context "
                                         rf"\({context} tokens"):
        mc.context_limit(context + 1, environ={})



@pytest.mark.parametrize("scaling, message", [
    ({"rope_type": "linear", "factor": "abc"}, "rope_scaling.factor must be a finite number above 0, got 'abc'"),
    ({"rope_type": "linear", "factor": None}, "rope_scaling.factor must be a finite number above 0, got None"),
    ({"rope_type": "linear", "factor": -2}, "rope_scaling.factor must be a finite number above 0, got -2"),
    ({"rope_type": "linear", "factor": float("inf")}, "rope_scaling.factor must be a finite number above 0, got inf"),
    ({"rope_type": "linear", "factor": True}, "rope_scaling.factor must be a finite number above 0, got True"),
    ({"rope_type": "linear", "factor": 1e307}, "rope_scaling.factor 1e\\+307 stretches the context past any length"),
    ({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": "128"},
     "rope_scaling.original_max_position_embeddings must be a positive integer, got '128'"),
    ({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 0},
     "rope_scaling.original_max_position_embeddings must be a positive integer, got 0"),
    ({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 1.5},
     "rope_scaling.original_max_position_embeddings must be a positive integer, got 1.5"),
    ({"rope_type": "dynamic", "factor": 2.0},
     "rope_scaling type 'dynamic' is not supported \\(supported: default, linear, llama3, yarn\\)"),
    ({"type": "longrope", "factor": 2.0}, "rope_scaling type 'longrope' is not supported"),
    ({"rope_type": "linear"}, "a linear rope_scaling needs factor"),
    ({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": None, "high_freq_factor": 4.0,
      "original_max_position_embeddings": 64}, "a llama3 rope_scaling needs low_freq_factor"),
    ({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0},
     "a llama3 rope_scaling needs high_freq_factor, original_max_position_embeddings"),
    ({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64, "beta_fast": "abc"},
     "rope_scaling.beta_fast must be a finite number, got 'abc'"),
    ({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64, "attention_factor": float("nan")},
     "rope_scaling.attention_factor must be a finite number, got nan"),
    ({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0, "high_freq_factor": 4.0,
      "original_max_position_embeddings": 64},
     "rope_scaling.low_freq_factor \\(4.0\\) must be below high_freq_factor \\(4.0\\)"),
])
def test_bad_rope_scaling_is_refused_naming_the_field(tiny_qwen3, tmp_path, scaling, message):
    """The scaling sets the default context limit and every rotation: a bad one fails at load, not as a traceback
    in the middle of sizing the engine."""
    assert_refused(tiny_qwen3, tmp_path, "rope_scaling", scaling, message)


def test_integral_float_original_length_is_accepted(tiny_qwen3):
    cfg = json.loads((tiny_qwen3 / "config.json").read_text())
    cfg["rope_scaling"] = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 256.0}
    assert ModelConfig.from_dict(cfg).max_context == 1024
