"""`ModelConfig` from config.json: impossible sizes are refused naming the file and the key."""
from __future__ import annotations

import json

import pytest

from tierlm.engine.errors import ModelLoadError
from tierlm.models.config import ModelConfig


@pytest.mark.parametrize("key, value", [("num_hidden_layers", 0), ("vocab_size", -5), ("hidden_size", 0),
                                        ("num_attention_heads", 0), ("num_key_value_heads", -1),
                                        ("intermediate_size", 0), ("head_dim", -16)])
def test_non_positive_sizes_name_the_key(tiny_qwen3, tmp_path, key, value):
    cfg = json.loads((tiny_qwen3 / "config.json").read_text())
    cfg[key] = value
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match=f"config.json: {key} must be a positive integer, got {value}"):
        ModelConfig.from_dir(tmp_path)


def test_tiny_config_is_accepted(tiny_qwen3):
    assert ModelConfig.from_dir(tiny_qwen3).num_layers == 2
