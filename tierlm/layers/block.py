"""`PreNormBlock`: the residual wiring every decoder layer shares (norm, attention, norm, feed-forward)."""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from tierlm.layers.norm import RMSNorm
from tierlm.parallel.linear import ColumnParallelLinear, NormedInput, decode_config


def _norm_into(norm: nn.Module, x: torch.Tensor, residual: Optional[torch.Tensor],
               consumer: Optional[nn.Module]) -> tuple[Any, torch.Tensor]:
    """`norm(x, residual)` -> (normed, new residual); the normed rows stay unevaluated (`NormedInput`) when
    the module that reads them first is a column-parallel linear whose decode kernel (the GEMV or the skinny
    GEMM) serves these rows with the norm fused in, so that the norm runs inside that kernel."""
    cfg = (decode_config(x, consumer.gemv_plan, consumer.gemm_plan, "rmsnorm")
           if isinstance(consumer, ColumnParallelLinear) and isinstance(norm, RMSNorm) else None)
    if cfg is not None:
        out = torch.empty_like(x) if residual is not None else None
        return NormedInput(x, residual, norm.weight, norm.eps, out, cfg), (out if out is not None else x)
    if residual is None:
        return norm(x), x
    return norm(x, residual)


class PreNormBlock(nn.Module):
    """Pre-norm transformer block whose residual adds are fused into the norms. A subclass builds
    `input_layernorm`, `self_attn` (called as `self_attn(x, batch, rotary, attn)`),
    `post_attention_layernorm` and `mlp`; the families differ only in what those are. Where `self_attn`
    has a `qkv_proj` (or `mlp` a `gate_up_proj`) its first read of `x` must be that projection: it may
    receive the norm unevaluated (`NormedInput`)."""

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor], batch: Any, rotary: Any,
                attn: Any) -> tuple[torch.Tensor, torch.Tensor]:
        x, residual = _norm_into(self.input_layernorm, x, residual, getattr(self.self_attn, "qkv_proj", None))
        x = self.self_attn(x, batch, rotary, attn)
        x, residual = _norm_into(self.post_attention_layernorm, x, residual, getattr(self.mlp, "gate_up_proj", None))
        return self.mlp(x), residual
