"""`PreNormBlock`: the residual wiring every decoder layer shares (norm, attention, norm, feed-forward)."""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from tierlm.layers.norm import RMSNorm
from tierlm.parallel.linear import ColumnParallelLinear, NormedInput, decode_config


def _fusable(norm: nn.Module, consumer: Optional[nn.Module]) -> bool:
    """Whether `norm` may be handed to `consumer` unevaluated: an RMSNorm read first by a column-parallel linear."""
    return isinstance(consumer, ColumnParallelLinear) and isinstance(norm, RMSNorm)


def _norm_into(norm: nn.Module, x: torch.Tensor, residual: Optional[torch.Tensor],
               consumer: Optional[nn.Module]) -> tuple[Any, torch.Tensor]:
    """`norm(x, residual)` -> (normed, new residual); the normed rows stay unevaluated (`NormedInput`) when
    the module that reads them first is a column-parallel linear whose GEMV serves these rows with the norm
    fused in, so that the norm runs inside that kernel."""
    cfg = decode_config(x, consumer.gemv_plan, None, "rmsnorm") if _fusable(norm, consumer) else None
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
        (norm1, first), (norm2, second) = self._norm_readers()
        x, residual = _norm_into(norm1, x, residual, first)
        x = self.self_attn(x, batch, rotary, attn)
        x, residual = _norm_into(norm2, x, residual, second)
        return self.mlp(x), residual

    def _norm_readers(self) -> tuple[tuple[nn.Module, Optional[nn.Module]], ...]:
        return ((self.input_layernorm, getattr(self.self_attn, "qkv_proj", None)),
                (self.post_attention_layernorm, getattr(self.mlp, "gate_up_proj", None)))

    def fused_prologues(self) -> list[tuple[nn.Module, str]]:
        """The linears that may receive this block's norms unevaluated, with that prologue's name: what their
        GEMV plans are tuned for (`tune_small_batch_linears`)."""
        return [(reader, "rmsnorm") for norm, reader in self._norm_readers() if _fusable(norm, reader)]
