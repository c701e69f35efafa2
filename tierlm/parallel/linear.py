"""Sharded layers of tensor parallelism, each telling the weight loader which slice of a checkpoint tensor
belongs to this rank.

A sharded parameter carries `tp_dim` (the dimension split over the ranks) and `tp_index` (which slice of the
checkpoint tensor this rank holds, in units of the parameter's own size along `tp_dim`); a fused module may
override the index per shard with `tp_index(shard)` (fused QKV: query heads and KV heads are indexed
differently when KV heads are replicated). With a group of size one every layer is its plain counterpart.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch
import torch.nn.functional as F
from torch import nn

from tierlm.parallel.group import TPGroup

if TYPE_CHECKING:
    from tierlm.kernels.gemv_tune import GemvPlan


def mark_sharded(param: nn.Parameter, dim: int, index: int) -> nn.Parameter:
    """Record for the loader that `param` holds slice `index` (of its own size) along `dim`."""
    param.tp_dim = dim
    param.tp_index = index
    return param


def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
           plan: "Optional[GemvPlan]") -> torch.Tensor:
    """`F.linear`, or the small-batch kernel where the layer's tuned plan chose it for this many rows (never
    inside torch.compile's trace, whose token dimension is symbolic)."""
    if plan is not None and x.is_cuda and not torch.compiler.is_compiling():
        from tierlm.kernels.gemv import gemv
        from tierlm.kernels.gemv_tune import bucket_of

        cfg = plan.get(bucket_of(x.numel() // x.shape[-1]))
        if cfg is not None:
            return gemv(x, weight, bias, cfg)
    return F.linear(x, weight, bias)


class ColumnParallelLinear(nn.Linear):
    """`y = x W^T + b` with the output features split over the ranks (no communication)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False, tp: Optional[TPGroup] = None,
                 index: Optional[int] = None) -> None:
        tp = tp or TPGroup()
        super().__init__(in_features, out_features, bias=bias)  # out_features: this rank's share
        self.tp = tp
        self.gemv_plan: Optional[GemvPlan] = None  # set by `tune_small_batch_linears`
        if tp.size > 1:
            mark_sharded(self.weight, 0, tp.rank if index is None else index)
            if self.bias is not None:
                mark_sharded(self.bias, 0, tp.rank if index is None else index)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias, self.gemv_plan)


class RowParallelLinear(nn.Linear):
    """`y = x W^T + b` with the input features split over the ranks: partial products are summed by an
    all-reduce, then the (replicated) bias is added once."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False,
                 tp: Optional[TPGroup] = None) -> None:
        tp = tp or TPGroup()
        super().__init__(in_features, out_features, bias=bias)  # in_features: this rank's share
        self.tp = tp
        self.gemv_plan: Optional[GemvPlan] = None  # set by `tune_small_batch_linears`
        if tp.size > 1:
            mark_sharded(self.weight, 1, tp.rank)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tp.size == 1:
            return linear(x, self.weight, self.bias, self.gemv_plan)
        y = self.tp.all_reduce(linear(x, self.weight, None, self.gemv_plan))
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


def tune_small_batch_linears(model: nn.Module) -> int:
    """Give every CUDA bf16/fp16 column- and row-parallel linear of `model` the small-batch plan of its weight
    shape from the autotune store (tuning each distinct shape once). Returns the number of layers planned."""
    from tierlm.kernels.gemv_tune import tuned_plan

    plans: dict = {}
    done = 0
    for layer in model.modules():
        if not isinstance(layer, (ColumnParallelLinear, RowParallelLinear)):
            continue
        w = layer.weight
        if not w.is_cuda or w.dtype not in (torch.bfloat16, torch.float16):
            continue
        key = (tuple(w.shape), w.dtype, w.device)
        if key not in plans:
            plans[key] = tuned_plan(w.shape[0], w.shape[1], w.dtype, w.device)
        layer.gemv_plan = plans[key]
        done += 1
    return done
