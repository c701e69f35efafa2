"""YaRN rope scaling: blended inverse frequencies and the magnitude corrections that go with them.

YaRN keeps the fast-rotating (high-frequency) dimensions as trained, interpolates the slow ones by `factor`
and ramps linearly in between; the cos/sin tables are scaled by an attention factor. DeepSeek models also
scale the softmax by `mscale(factor, mscale_all_dim) ** 2` (see `yarn_softmax_scale`).
"""
from __future__ import annotations

import math

import torch


def yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    """The magnitude correction `0.1 * mscale * ln(scale) + 1` (1 when not extending)."""
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def _correction_dim(rotations: float, dim: int, base: float, max_positions: int) -> float:
    """The rotary dimension that completes `rotations` turns over `max_positions` tokens."""
    return dim * math.log(max_positions / (rotations * 2 * math.pi)) / (2 * math.log(base))


def yarn_factor(scaling: dict, max_positions: int) -> float:
    """The scaling's `factor`, or where it is missing the ratio of `max_positions` (the config's
    max_position_embeddings) to `original_max_position_embeddings`, as transformers reads it."""
    factor = scaling.get("factor")
    if factor is not None:
        return float(factor)
    return max_positions / int(scaling.get("original_max_position_embeddings") or max_positions)


def yarn_inv_freq(dim: int, theta: float, scaling: dict, max_positions: int) -> tuple[torch.Tensor, float]:
    """Inverse frequencies (float32, `dim // 2`) and the cos/sin scaling factor for a `yarn` rope_scaling
    dict (`factor`, `original_max_position_embeddings`, optional `beta_fast`/`beta_slow`, `mscale`,
    `mscale_all_dim`, `attention_factor`, `truncate`). `max_positions` (the config's max_position_embeddings)
    stands in for a missing `factor`."""
    old_len = int(scaling["original_max_position_embeddings"])
    factor = yarn_factor(scaling, max_positions)
    attention_factor = scaling.get("attention_factor")
    mscale, mscale_all_dim = scaling.get("mscale"), scaling.get("mscale_all_dim")
    if attention_factor is None:
        if mscale and mscale_all_dim:
            attention_factor = yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all_dim)
        else:
            attention_factor = yarn_mscale(factor)
    beta_fast = scaling.get("beta_fast") or 32
    beta_slow = scaling.get("beta_slow") or 1
    low = _correction_dim(beta_fast, dim, theta, old_len)
    high = _correction_dim(beta_slow, dim, theta, old_len)
    if scaling.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # a one-point ramp would divide by zero
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    pos_freqs = theta ** (torch.arange(0, dim, 2).float() / dim)
    extrapolation = 1 - ramp  # weight of the trained frequency
    inv_freq = (1.0 / (factor * pos_freqs)) * (1 - extrapolation) + (1.0 / pos_freqs) * extrapolation
    return inv_freq, float(attention_factor)


def yarn_softmax_scale(scaling: dict | None, scale: float, max_positions: int) -> float:
    """DeepSeek's softmax scale: `scale * mscale(factor, mscale_all_dim) ** 2` under a non-default rope with
    `mscale_all_dim` set, else `scale`; the factor as `yarn_factor` reads it (`max_positions`: the config's
    max_position_embeddings)."""
    scaling = scaling or {}
    if scaling.get("rope_type", scaling.get("type", "default")) == "default":
        return scale
    mscale_all_dim = scaling.get("mscale_all_dim", 0)
    if mscale_all_dim:
        m = yarn_mscale(yarn_factor(scaling, max_positions), mscale_all_dim)
        scale = scale * m * m
    return scale
