"""Sharded layers of tensor parallelism, each telling the weight loader which slice of a checkpoint tensor
belongs to this rank.

A sharded parameter carries `tp_dim` (the dimension split over the ranks) and `tp_index` (which slice of the
checkpoint tensor this rank holds, in units of the parameter's own size along `tp_dim`); a fused module may
override the index per shard with `tp_index(shard)` (fused QKV: query heads and KV heads are indexed
differently when KV heads are replicated). With a group of size one every layer is its plain counterpart.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from tierlm.parallel.group import TPGroup


def mark_sharded(param: nn.Parameter, dim: int, index: int) -> nn.Parameter:
    """Record for the loader that `param` holds slice `index` (of its own size) along `dim`."""
    param.tp_dim = dim
    param.tp_index = index
    return param


class ColumnParallelLinear(nn.Linear):
    """`y = x W^T + b` with the output features split over the ranks (no communication)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False, tp: Optional[TPGroup] = None,
                 index: Optional[int] = None) -> None:
        tp = tp or TPGroup()
        super().__init__(in_features, out_features, bias=bias)  # out_features: this rank's share
        self.tp = tp
        if tp.size > 1:
            mark_sharded(self.weight, 0, tp.rank if index is None else index)
            if self.bias is not None:
                mark_sharded(self.bias, 0, tp.rank if index is None else index)


class RowParallelLinear(nn.Linear):
    """`y = x W^T + b` with the input features split over the ranks: partial products are summed by an
    all-reduce, then the (replicated) bias is added once."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False,
                 tp: Optional[TPGroup] = None) -> None:
        tp = tp or TPGroup()
        super().__init__(in_features, out_features, bias=bias)  # in_features: this rank's share
        self.tp = tp
        if tp.size > 1:
            mark_sharded(self.weight, 1, tp.rank)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tp.size == 1:
            return super().forward(x)
        y = self.tp.all_reduce(F.linear(x, self.weight))
        return y if self.bias is None else y + self.bias


def padded_vocab(vocab: int, tp: TPGroup) -> int:
    """The vocabulary rounded up to a multiple of the ranks (the padding rows are zero and never sampled)."""
    return -(-vocab // tp.size) * tp.size


class VocabParallelEmbedding(nn.Module):
    """Token embedding with the vocabulary split over the ranks: each rank looks up the ids it holds and
    the all-reduce assembles the rows."""

    def __init__(self, vocab: int, hidden: int, tp: Optional[TPGroup] = None) -> None:
        super().__init__()
        self.tp = tp or TPGroup()
        self.vocab = vocab
        self.per_rank = padded_vocab(vocab, self.tp) // self.tp.size
        self.start = self.tp.rank * self.per_rank
        self.weight = nn.Parameter(torch.empty(self.per_rank, hidden))
        if self.tp.size > 1:
            mark_sharded(self.weight, 0, self.tp.rank)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.tp.size == 1:
            return F.embedding(ids, self.weight)
        local = ids - self.start
        outside = (local < 0) | (local >= self.per_rank)
        out = F.embedding(local.masked_fill(outside, 0), self.weight)
        out.masked_fill_(outside.unsqueeze(-1), 0)
        return self.tp.all_reduce(out)


class ParallelLMHead(nn.Module):
    """Output projection with the vocabulary split over the ranks; logits are gathered on every rank and
    the padding columns dropped."""

    def __init__(self, hidden: int, vocab: int, tp: Optional[TPGroup] = None) -> None:
        super().__init__()
        self.tp = tp or TPGroup()
        self.vocab = vocab
        per_rank = padded_vocab(vocab, self.tp) // self.tp.size
        self.weight = nn.Parameter(torch.empty(per_rank, hidden))
        if self.tp.size > 1:
            mark_sharded(self.weight, 0, self.tp.rank)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.tp.all_gather_last(F.linear(hidden, self.weight))
        return logits if logits.shape[-1] == self.vocab else logits[..., :self.vocab]
