"""YaRN frequencies, cos/sin factor and DeepSeek's softmax scale equal transformers' for the same rope dict."""
from __future__ import annotations

import math

import pytest
import torch
from transformers import DeepseekV2Config
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from tierlm.layers.yarn import yarn_inv_freq, yarn_mscale, yarn_softmax_scale

V2_LITE = {"rope_type": "yarn", "factor": 40, "original_max_position_embeddings": 4096, "beta_fast": 32,
           "beta_slow": 1, "mscale": 0.707, "mscale_all_dim": 0.707}
CASES = [
    V2_LITE,
    {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 128, "mscale": 1.0,
     "mscale_all_dim": 0.8},
    {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 256, "truncate": False},
    {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 64, "attention_factor": 1.3,
     "beta_fast": 16, "beta_slow": 2},
]


@pytest.mark.parametrize("scaling", CASES)
def test_inv_freq_and_factor_match_transformers(scaling):
    cfg = DeepseekV2Config(hidden_size=256, num_attention_heads=4, qk_rope_head_dim=64, max_position_embeddings=4096,
                           rope_parameters={**scaling, "rope_theta": 10000.0})
    ref_freq, ref_factor = ROPE_INIT_FUNCTIONS["yarn"](cfg)
    freq, factor = yarn_inv_freq(64, 10000.0, scaling, 4096)
    assert torch.equal(freq, ref_freq.float())
    assert factor == pytest.approx(ref_factor, rel=1e-12)


def test_missing_factor_comes_from_the_context_ratio():
    scaling = {"rope_type": "yarn", "factor": None, "original_max_position_embeddings": 1024}
    freq, factor = yarn_inv_freq(32, 10000.0, scaling, 4096)
    ref, _ = yarn_inv_freq(32, 10000.0, {**scaling, "factor": 4.0}, 4096)
    assert torch.equal(freq, ref) and factor == pytest.approx(yarn_mscale(4.0))


def test_softmax_scale():
    base = 192 ** -0.5
    m = 0.1 * 0.707 * math.log(40) + 1.0
    assert yarn_softmax_scale(V2_LITE, base, 4096) == pytest.approx(base * m * m)
    legacy = {k: v for k, v in V2_LITE.items() if k != "rope_type"} | {"type": "yarn"}  # published files' key
    assert yarn_softmax_scale(legacy, base, 4096) == pytest.approx(base * m * m)
    assert yarn_softmax_scale(None, base, 4096) == base
    assert yarn_softmax_scale({"rope_type": "yarn", "factor": 40}, base, 4096) == base  # no mscale_all_dim
    assert yarn_mscale(1.0, 5.0) == 1.0
    no_factor = {k: v for k, v in V2_LITE.items() if k != "factor"}  # factor: the context ratio, 40960 / 4096
    m10 = 0.1 * 0.707 * math.log(10) + 1.0
    assert yarn_softmax_scale(no_factor, base, 40960) == pytest.approx(base * m10 * m10)
