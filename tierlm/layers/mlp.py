"""`GatedMLP`: the SwiGLU feed-forward every family uses (dense MLPs, experts, shared experts)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tierlm.parallel.group import TPGroup
from tierlm.parallel.linear import ColumnParallelLinear, RowParallelLinear


class GatedMLP(nn.Module):
    """SwiGLU feed-forward with fused gate/up projection (the dense MLP, each expert, the shared experts);
    under tensor parallelism the intermediate dimension is split and the down projection all-reduces."""

    def __init__(self, hidden: int, intermediate: int, tp: TPGroup = TPGroup()) -> None:
        super().__init__()
        self.intermediate = tp.split(intermediate, "the MLP intermediate size")
        self.gate_up_proj = ColumnParallelLinear(hidden, 2 * self.intermediate, False, tp)
        self.down_proj = RowParallelLinear(self.intermediate, hidden, False, tp)

    def fused_prologues(self) -> list[tuple[nn.Module, str]]:
        """The down projection reads `silu(gate) * up` (`forward_silu_mul`): its GEMV plan is tuned for that
        prologue (`tune_small_batch_linears`)."""
        return [(self.down_proj, "silu_mul")]

    def shard_range(self, shard: int) -> tuple[int, int]:
        return shard * self.intermediate, (shard + 1) * self.intermediate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate_up = self.gate_up_proj(x)
        fused = self.down_proj.forward_silu_mul(gate_up)  # one launch at small batch, where planned
        if fused is not None:
            return fused
        if gate_up.is_cuda:
            from tierlm.kernels.fused import silu_mul

            return self.down_proj(silu_mul(gate_up))
        gate, up = gate_up.chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)
