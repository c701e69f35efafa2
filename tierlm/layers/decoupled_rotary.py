"""Rotary embedding of the decoupled rope part of multi-head latent attention (DeepSeek-V2/V3).

Only the last `qk_rope_head_dim` dims of each query head and the one shared rope key are rotated. DeepSeek
pairs the dims in one of three ways, and the output keeps the pairing's layout, so the cached key and the
query agree:
- "complex": pairs (x0, x1), (x2, x3), ... rotated as complex numbers, output interleaved like the input;
- "interleave": the same pairs, output as all first members then all second members;
- "half": pairs (x_i, x_{i + d/2}) (rotate-half), output in place.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from tierlm.layers.rotary import rope_inv_freq

STYLES = ("complex", "interleave", "half")


class DecoupledRotary(nn.Module):
    """Rotates q `[T, H, d]` and the shared k `[T, d]` at `positions` in float32 (as the reference does).

    The cos/sin tables (`[max_positions, d / 2]`, already multiplied by the rope's attention factor) stay
    float32 whatever dtype the model is cast to; they only follow device moves.
    """

    def __init__(self, dim: int, max_positions: int, theta: float, scaling: Optional[dict], style: str,
                 config_max_positions: int) -> None:
        super().__init__()
        if style not in STYLES:
            raise ValueError(f"unknown rope pairing {style!r} (choose from {', '.join(STYLES)})")
        self.style = style
        inv_freq, attn_scale = rope_inv_freq(dim, theta, scaling, config_max_positions)
        freqs = torch.arange(max_positions, dtype=torch.float32)[:, None] * inv_freq[None, :]
        self.register_buffer("cos", freqs.cos() * attn_scale, persistent=False)
        self.register_buffer("sin", freqs.sin() * attn_scale, persistent=False)

    def _apply(self, fn, recurse: bool = True):
        cos, sin = self.cos, self.sin
        super()._apply(fn, recurse)
        self.cos, self.sin = cos.to(self.cos.device), sin.to(self.sin.device)  # device moves only
        return self

    def _rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        if self.style == "half":
            x1, x2 = x.chunk(2, dim=-1)
        else:
            x1, x2 = x[..., 0::2], x[..., 1::2]
        r1, r2 = x1 * cos - x2 * sin, x2 * cos + x1 * sin
        if self.style == "complex":
            return torch.stack((r1, r2), dim=-1).flatten(-2)
        return torch.cat((r1, r2), dim=-1)

    def forward(self, positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor,
                q_out: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotated q `[T, H, d]` and k `[T, d]`: on CUDA in one Triton launch (`kernels.decoupled_rope`, the same
        bits as `rotate_torch`), elsewhere by `rotate_torch`. With `q_out` (which may be `q` itself) the rotated
        q is written there and returned."""
        if q.is_cuda:
            from tierlm.kernels.decoupled_rope import decoupled_rope

            return decoupled_rope(positions, q, k, self.cos, self.sin, self.style, q_out)
        q_rot, k_rot = self.rotate_torch(positions, q, k)
        return (q_rot if q_out is None else q_out.copy_(q_rot)), k_rot

    def rotate_torch(self, positions: torch.Tensor, q: torch.Tensor,
                     k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The rotation in torch ops, in float32, narrowed to the inputs' dtype."""
        cos, sin = self.cos[positions], self.sin[positions]  # [T, d / 2]
        q_out = self._rotate(q.float(), cos[:, None], sin[:, None]).to(q.dtype)
        return q_out, self._rotate(k.float(), cos, sin).to(k.dtype)
