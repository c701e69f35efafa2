"""Sharded layers of tensor parallelism, each telling the weight loader which slice of a checkpoint tensor
belongs to this rank.

A sharded parameter carries `tp_dim` (the dimension split over the ranks) and `tp_index` (which slice of the
checkpoint tensor this rank holds, in units of the parameter's own size along `tp_dim`); a fused module may
override the index per shard with `tp_index(shard)` (fused QKV: query heads and KV heads are indexed
differently when KV heads are replicated). With a group of size one every layer is its plain counterpart.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from tierlm.parallel.group import TPGroup

if TYPE_CHECKING:
    from tierlm.kernels.gemv import GemvConfig
    from tierlm.kernels.gemv_tune import GemvPlan
    from tierlm.kernels.skinny_gemm import SkinnyConfig
    from tierlm.kernels.skinny_gemm_tune import SkinnyPlan


def mark_sharded(param: nn.Parameter, dim: int, index: int) -> nn.Parameter:
    """Record for the loader that `param` holds slice `index` (of its own size) along `dim`."""
    param.tp_dim = dim
    param.tp_index = index
    return param


def decode_config(x: torch.Tensor, plan: "Optional[GemvPlan]", gemm_plan: "Optional[SkinnyPlan]",
                  prologue: str = "plain") -> "Union[GemvConfig, SkinnyConfig, None]":
    """The decode kernel's launch for `x`'s rows read through `prologue`: the GEMV's (1-4 rows, any prologue its
    plan has) or the skinny GEMM's (5-256 rows, "plain" only) where the layer's plans chose one, else None (the
    torch path; also off the GPU and inside torch.compile's trace, whose token dimension is symbolic)."""
    if not x.is_cuda or torch.compiler.is_compiling():
        return None
    rows = x.numel() // x.shape[-1]
    cfg = None
    if plan is not None and prologue in plan:
        from tierlm.kernels.gemv_tune import bucket_of

        cfg = plan[prologue].get(bucket_of(rows))
    if cfg is None and gemm_plan is not None and prologue == "plain":
        cfg = gemm_plan.config_for(rows)
    return cfg


def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], plan: "Optional[GemvPlan]",
           gemm_plan: "Optional[SkinnyPlan]" = None) -> torch.Tensor:
    """`F.linear`, or one of the decode kernels where the layer's tuned plans chose it for this many rows:
    the GEMV (1-4 rows) or the skinny GEMM (5-256 rows)."""
    cfg = decode_config(x, plan, gemm_plan)
    if cfg is None:
        return F.linear(x, weight, bias)
    from tierlm.kernels.gemv import GemvConfig, gemv

    if isinstance(cfg, GemvConfig):
        return gemv(x, weight, bias, cfg)
    from tierlm.kernels.skinny_gemm import skinny_gemm

    return skinny_gemm(x, weight, bias, cfg, gemm_plan.counters)


@dataclass(frozen=True)
class NormedInput:
    """`RMSNorm(x + residual)` handed to a column-parallel linear unevaluated, so that its GEMV applies the
    norm on the way in (one launch instead of two). The new residual stream, `x + residual`
    (or `x` without a residual), is written into `residual_out`. Made only where the layer's plan runs the
    kernel for these rows (`PreNormBlock`), with the launch that plan chose."""

    x: torch.Tensor
    residual: Optional[torch.Tensor]
    weight: torch.Tensor  # the norm's
    eps: float
    residual_out: Optional[torch.Tensor]
    config: "GemvConfig"


class ColumnParallelLinear(nn.Linear):
    """`y = x W^T + b` with the output features split over the ranks (no communication)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False, tp: Optional[TPGroup] = None,
                 index: Optional[int] = None) -> None:
        tp = tp or TPGroup()
        super().__init__(in_features, out_features, bias=bias)  # out_features: this rank's share
        self.tp = tp
        self.gemv_plan: Optional[GemvPlan] = None  # set by `tune_small_batch_linears`
        self.gemm_plan: Optional[SkinnyPlan] = None  # likewise
        if tp.size > 1:
            mark_sharded(self.weight, 0, tp.rank if index is None else index)
            if self.bias is not None:
                mark_sharded(self.bias, 0, tp.rank if index is None else index)

    def forward(self, x: Union[torch.Tensor, NormedInput]) -> torch.Tensor:
        if isinstance(x, NormedInput):
            from tierlm.kernels.gemv import rmsnorm_gemv

            return rmsnorm_gemv(x.x, x.residual, x.weight, x.eps, self.weight, self.bias, x.config,
                                x.residual_out)[0]
        return linear(x, self.weight, self.bias, self.gemv_plan, self.gemm_plan)


class RowParallelLinear(nn.Linear):
    """`y = x W^T + b` with the input features split over the ranks: partial products are summed by an
    all-reduce, then the (replicated) bias is added once."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False,
                 tp: Optional[TPGroup] = None) -> None:
        tp = tp or TPGroup()
        super().__init__(in_features, out_features, bias=bias)  # in_features: this rank's share
        self.tp = tp
        self.gemv_plan: Optional[GemvPlan] = None  # set by `tune_small_batch_linears`
        self.gemm_plan: Optional[SkinnyPlan] = None  # likewise
        if tp.size > 1:
            mark_sharded(self.weight, 1, tp.rank)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tp.size == 1:
            return linear(x, self.weight, self.bias, self.gemv_plan, self.gemm_plan)
        y = self.tp.all_reduce(linear(x, self.weight, None, self.gemv_plan, self.gemm_plan))
        return y if self.bias is None else y + self.bias

    def forward_silu_mul(self, gate_up: torch.Tensor) -> Optional[torch.Tensor]:
        """`forward(silu(gate) * up)` in one GEMV launch, or None where the plan does not fuse it."""
        cfg = decode_config(gate_up, self.gemv_plan, None, "silu_mul")
        if cfg is None:
            return None
        from tierlm.kernels.gemv import silu_mul_gemv

        y = silu_mul_gemv(gate_up, self.weight, cfg)
        if self.tp.size > 1:
            y = self.tp.all_reduce(y)
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


def declared_prologues(model: nn.Module) -> dict[int, tuple[str, ...]]:
    """What each linear of `model` reads, by `id`: "plain" and the prologues its feeding modules declare
    (`fused_prologues()`), for the layers some module declares."""
    declared: dict[int, set] = {}
    for module in model.modules():
        for layer, prologue in (module.fused_prologues() if hasattr(module, "fused_prologues") else ()):
            declared.setdefault(id(layer), set()).add(prologue)
    return {key: ("plain", *sorted(p)) for key, p in declared.items()}


def tune_small_batch_linears(model: nn.Module, gemv: bool = True, gemm: bool = True) -> int:
    """Give every CUDA bf16/fp16 column- and row-parallel linear of `model` the decode plans of its weight
    shape from the autotune store (tuning each distinct shape once): the GEMV's (`gemv`), for the plain input
    and for the prologues the modules that feed the layer declare (`fused_prologues()`: [(layer, "rmsnorm" |
    "silu_mul")], e.g. a pre-norm block's norm before its QKV projection), and the skinny GEMM's (`gemm`).
    Returns the number of layers planned."""
    from tierlm.kernels.gemv_tune import tuned_plan
    from tierlm.kernels.skinny_gemm_tune import tuned_skinny_plan

    declared = declared_prologues(model)
    plans: dict = {}
    done = 0
    for layer in model.modules():
        if not isinstance(layer, (ColumnParallelLinear, RowParallelLinear)):
            continue
        w = layer.weight
        if not w.is_cuda or w.dtype not in (torch.bfloat16, torch.float16):
            continue
        prologues = declared.get(id(layer), ("plain",))
        gemv_key, gemm_key = (("gemv", tuple(w.shape), prologues, w.dtype, w.device),
                              ("gemm", tuple(w.shape), w.dtype, w.device))
        if gemv and gemv_key not in plans:
            plans[gemv_key] = tuned_plan(w.shape[0], w.shape[1], prologues, w.dtype, w.device)
        if gemm and gemm_key not in plans:
            plans[gemm_key] = tuned_skinny_plan(w.shape[0], w.shape[1], w.dtype, w.device)
        layer.gemv_plan, layer.gemm_plan = plans.get(gemv_key), plans.get(gemm_key)
        done += 1
    return done
