"""`TPGroup`: who this rank is among the tensor-parallel ranks, and the collectives of the forward pass.

It is passed explicitly to every sharded layer (there is no process-wide parallel state). A group of size
one is the single-device case: every collective is the identity, so models are written once.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch


@dataclass(frozen=True)
class TPGroup:
    """Rank `rank` of `size` tensor-parallel ranks; `group` is their torch.distributed process group (NCCL on
    CUDA, gloo on CPU), None when `size` is 1."""

    size: int = 1
    rank: int = 0
    group: Optional[Any] = None

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.size:
            raise ValueError(f"tensor-parallel rank {self.rank} is outside 0..{self.size - 1}")

    def split(self, total: int, what: str) -> int:
        """`total` divided evenly over the ranks (raises naming `what` when it does not divide)."""
        if total % self.size:
            raise ValueError(f"--tp-size {self.size}: {what} ({total}) is not divisible by it")
        return total // self.size

    def kv_heads(self, total: int) -> tuple[int, int]:
        """(KV heads on this rank, index of this rank's slice of `total` KV heads, in units of that count).

        With at least as many KV heads as ranks they are split; with fewer, each head is replicated on
        `size // total` consecutive ranks."""
        if total >= self.size:
            return self.split(total, "the number of KV heads"), self.rank
        if self.size % total:
            raise ValueError(f"--tp-size {self.size}: the {total} KV heads cannot be replicated evenly over it")
        return 1, self.rank // (self.size // total)

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        """Sum `x` over the ranks, in place."""
        if self.size > 1:
            import torch.distributed as dist

            dist.all_reduce(x, group=self.group)
        return x

    def all_gather_last(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenate every rank's `x` along the last dimension (rank order)."""
        if self.size == 1:
            return x
        import torch.distributed as dist

        x = x.contiguous()
        if x.is_cuda:
            out = torch.empty((self.size, *x.shape), dtype=x.dtype, device=x.device)
            dist.all_gather_into_tensor(out, x, group=self.group)
            parts = out.unbind(0)
        else:
            parts = [torch.empty_like(x) for _ in range(self.size)]
            dist.all_gather(parts, x, group=self.group)
        return torch.cat(parts, dim=-1)

    def broadcast(self, x: torch.Tensor, src: int = 0) -> torch.Tensor:
        """`x` of rank `src` on every rank, in place."""
        if self.size > 1:
            import torch.distributed as dist

            dist.broadcast(x, src=src, group=self.group)  # the group spans ranks 0..size-1
        return x

    def shard_name(self, total_kv_heads: int) -> str:
        """A name of this rank's KV shard for L3 page keys: the KV head range it holds ("" when it holds them
        all, so single-device keys are unchanged)."""
        local, index = self.kv_heads(total_kv_heads)
        if local == total_kv_heads:
            return ""
        return f"heads{index * local}-{(index + 1) * local}of{total_kv_heads}"
