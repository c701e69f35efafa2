"""RMSNorm, computed in float32 like the reference implementation so outputs match bit for bit in fp32."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn


class RMSNorm(nn.Module):
    """Root-mean-square layer norm; `forward(x, residual)` fuses the residual add (returns both)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x32 = x.to(torch.float32)
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None):
        if x.is_cuda:  # one fused Triton pass on the GPU
            from tierlm.kernels.fused import rmsnorm

            out, res = rmsnorm(x, self.weight, self.eps, residual)
            return out if residual is None else (out, res)
        if residual is None:
            return self._norm(x)
        x = x + residual
        return self._norm(x), x
