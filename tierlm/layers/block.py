"""`PreNormBlock`: the residual wiring every decoder layer shares (norm, attention, norm, feed-forward)."""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn


class PreNormBlock(nn.Module):
    """Pre-norm transformer block whose residual adds are fused into the norms. A subclass builds
    `input_layernorm`, `self_attn` (called as `self_attn(x, batch, rotary, attn)`),
    `post_attention_layernorm` and `mlp`; the families differ only in what those are."""

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor], batch: Any, rotary: Any,
                attn: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if residual is None:
            residual, x = x, self.input_layernorm(x)
        else:
            x, residual = self.input_layernorm(x, residual)
        x = self.self_attn(x, batch, rotary, attn)
        x, residual = self.post_attention_layernorm(x, residual)
        return self.mlp(x), residual
