"""The decoupled rope of latent attention rotates exactly like transformers' DeepSeek-V2 and V3 code, in
float32 whatever the model dtype."""
from __future__ import annotations

import pytest
import torch
from transformers.models.deepseek_v2.modeling_deepseek_v2 import apply_rotary_emb
from transformers.models.deepseek_v3.modeling_deepseek_v3 import (apply_rotary_pos_emb,
                                                                   apply_rotary_pos_emb_interleave)

from tierlm.layers.decoupled_rotary import DecoupledRotary

DIM, POSITIONS = 16, 64
YARN = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16, "mscale": 1.0,
        "mscale_all_dim": 0.5}


def tables(rope: DecoupledRotary, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's cos/sin layout: `cat(freqs, freqs)`, shape [1, T, DIM]."""
    cos, sin = rope.cos[positions], rope.sin[positions]
    return torch.cat((cos, cos), -1)[None], torch.cat((sin, sin), -1)[None]


@pytest.mark.parametrize("scaling", [None, YARN])
@pytest.mark.parametrize("style", ["complex", "interleave", "half"])
def test_matches_reference(style, scaling):
    gen = torch.Generator().manual_seed(0)
    T, H = 9, 3
    q, k = torch.randn(T, H, DIM, generator=gen), torch.randn(T, DIM, generator=gen)
    positions = torch.tensor([0, 1, 2, 5, 17, 30, 31, 62, 63])
    rope = DecoupledRotary(DIM, POSITIONS, 10000.0, scaling, style, POSITIONS)
    ours_q, ours_k = rope(positions, q, k)
    q4, k4 = q.transpose(0, 1)[None], k[None, None]  # reference layout [batch, heads, T, dim]
    if style == "complex":
        cos, sin = rope.cos[positions], rope.sin[positions]
        ref_q, ref_k = apply_rotary_emb(q4, k4, torch.complex(cos, sin)[None])
    else:
        cos, sin = tables(rope, positions)
        fn = apply_rotary_pos_emb_interleave if style == "interleave" else apply_rotary_pos_emb
        ref_q, ref_k = fn(q4, k4, cos, sin)
    torch.testing.assert_close(ours_q, ref_q[0].transpose(0, 1), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ours_k, ref_k[0, 0], rtol=1e-6, atol=1e-6)


def test_position_zero_is_identity_and_yarn_scales_magnitude():
    q, k = torch.randn(1, 2, DIM), torch.randn(1, DIM)
    plain = DecoupledRotary(DIM, POSITIONS, 10000.0, None, "complex", POSITIONS)
    out_q, out_k = plain(torch.tensor([0]), q, k)
    assert torch.equal(out_q, q) and torch.equal(out_k, k)
    yarn = DecoupledRotary(DIM, POSITIONS, 10000.0, YARN, "complex", POSITIONS)
    factor = (0.1 * 1.0 * torch.log(torch.tensor(4.0)) + 1) / (0.1 * 0.5 * torch.log(torch.tensor(4.0)) + 1)
    torch.testing.assert_close(yarn(torch.tensor([0]), q, k)[1], k * factor)


def test_tables_stay_float32_when_the_model_is_cast():
    rope = DecoupledRotary(DIM, POSITIONS, 10000.0, YARN, "interleave", POSITIONS)
    cos = rope.cos.clone()
    rope.to(torch.bfloat16)
    assert rope.cos.dtype == torch.float32 and torch.equal(rope.cos, cos)
    q, k = torch.randn(4, 2, DIM).bfloat16(), torch.randn(4, DIM).bfloat16()
    out_q, out_k = rope(torch.arange(4), q, k)
    assert out_q.dtype == out_k.dtype == torch.bfloat16


def test_unknown_style_is_refused():
    with pytest.raises(ValueError, match="unknown rope pairing 'zigzag'"):
        DecoupledRotary(DIM, POSITIONS, 10000.0, None, "zigzag", POSITIONS)
