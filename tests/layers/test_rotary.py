"""Rope frequencies and cos/sin factors of dense models equal transformers' for the same config."""
from __future__ import annotations

import pytest
import torch
from transformers import Qwen3Config
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from tierlm.layers.rotary import RotaryEmbedding, rope_inv_freq

CASES = [
    {"rope_type": "linear", "factor": 2.0},
    {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
     "original_max_position_embeddings": 8192},
    {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768},  # Qwen3's long-context setting
    {"rope_type": "yarn", "factor": 4.0},  # original_max_position_embeddings: the config's max_position_embeddings
    {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 4096, "beta_fast": 16, "beta_slow": 2,
     "attention_factor": 1.1, "truncate": False},
]


@pytest.mark.parametrize("scaling", CASES)
def test_inv_freq_and_factor_match_transformers(scaling):
    cfg = Qwen3Config(hidden_size=512, num_attention_heads=4, head_dim=128, max_position_embeddings=32768,
                      rope_parameters={**scaling, "rope_theta": 1000000.0})
    ref_freq, ref_factor = ROPE_INIT_FUNCTIONS[scaling["rope_type"]](cfg, "cpu")
    freq, factor = rope_inv_freq(128, 1000000.0, scaling, 32768)
    assert torch.equal(freq, ref_freq.float())
    assert factor == pytest.approx(ref_factor, rel=1e-12)


def test_yarn_table_carries_the_attention_factor():
    scaling = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16}
    rope, plain = RotaryEmbedding(32, 64, 10000.0, scaling), RotaryEmbedding(32, 64, 10000.0)
    freq, factor = rope_inv_freq(32, 10000.0, scaling)
    assert factor > 1.0
    assert torch.allclose(rope.cos[:, :16], (torch.arange(64.0)[:, None] * freq).cos() * factor)
    assert not torch.allclose(rope.cos, plain.cos)


def test_yarn_without_its_original_length_needs_the_config_length():
    with pytest.raises(ValueError, match="max_position_embeddings"):
        rope_inv_freq(32, 10000.0, {"rope_type": "yarn", "factor": 4.0})
