"""Rotary position embedding with the scaling variants of Llama 3, YaRN and linear interpolation."""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from tierlm.layers.yarn import yarn_inv_freq

ROPE_TYPES = ("default", "linear", "llama3", "yarn")


def rope_type_of(scaling: Optional[dict]) -> str:
    """The rope scaling's type (`rope_type`, or `type` as older config files spell it); "default" without one."""
    return (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))


def rope_inv_freq(head_dim: int, theta: float, scaling: Optional[dict],
                  config_max_positions: Optional[int] = None) -> tuple[torch.Tensor, float]:
    """Inverse frequencies (float32) and the cos/sin scaling factor for a rope configuration (one of
    `ROPE_TYPES`). `config_max_positions` (the config's max_position_embeddings) stands in for YaRN's missing
    `original_max_position_embeddings`, as transformers fills it."""
    rope_type = rope_type_of(scaling)
    if rope_type == "yarn":
        if "original_max_position_embeddings" not in scaling:
            if config_max_positions is None:
                raise ValueError("a yarn rope_scaling without original_max_position_embeddings needs the "
                                 "config's max_position_embeddings")
            scaling = {**scaling, "original_max_position_embeddings": config_max_positions}
        return yarn_inv_freq(head_dim, theta, scaling, config_max_positions or 0)
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    if rope_type == "default":
        return inv_freq, 1.0
    if rope_type == "linear":
        return inv_freq / float(scaling["factor"]), 1.0
    if rope_type == "llama3":
        factor = float(scaling["factor"])
        low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
        old_len = float(scaling["original_max_position_embeddings"])
        low_wavelen, high_wavelen = old_len / low, old_len / high
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
        return torch.where(medium, smoothed, scaled), 1.0
    raise ValueError(f"unsupported rope_scaling type {rope_type!r} (supported: {', '.join(ROPE_TYPES)})")


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class RotaryEmbedding(nn.Module):
    """Applies rotary embedding to q and k (`[tokens, heads, head_dim]`) at given positions.

    The cos/sin table is precomputed for all positions up to `max_positions` in float32, the way the
    reference model computes it on the fly, so fp32 outputs match it exactly.
    """

    def __init__(self, head_dim: int, max_positions: int, theta: float, scaling: Optional[dict] = None,
                 config_max_positions: Optional[int] = None) -> None:
        super().__init__()
        inv_freq, attn_scale = rope_inv_freq(head_dim, theta, scaling, config_max_positions)
        pos = torch.arange(max_positions, dtype=torch.float32)
        freqs = pos[:, None] * inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("cos", emb.cos() * attn_scale, persistent=False)
        self.register_buffer("sin", emb.sin() * attn_scale, persistent=False)

    def forward(self, positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cos = self.cos[positions].unsqueeze(1).to(q.dtype)
        sin = self.sin[positions].unsqueeze(1).to(q.dtype)
        return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
