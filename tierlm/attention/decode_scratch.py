"""Split-KV decode metadata shared by the Triton backends (GQA and latent): per step, the batch's rows and
lengths (and, for larger batches, the order to take them in: longest first) plus float32 scratch for the
per-split outputs; for CUDA graphs, static scratch sized once for every batch size up to the largest captured
one (the rows and lengths are the graph runner's own static buffers), so a graph captured for size `bs` stays
valid at replay."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from tierlm.kernels.balanced_splits import BalancedPlan, scratch_splits
from tierlm.kernels.longest_first import longest_first


@dataclass
class DecodeMeta:
    req_rows: torch.Tensor  # [B] int32
    seq_lens: torch.Tensor  # [B] int32
    mid_o: torch.Tensor  # [B, H, S, D] float32 split outputs
    mid_lse: torch.Tensor  # [B, H, S] float32 split log-sum-exps (base 2)
    order: Optional[torch.Tensor] = None  # [B] the requests by decreasing length, or None: as they come
    plan: Optional[BalancedPlan] = None  # the KV split by tokens across the batch (`kernels.balanced_splits`)


class DecodeScratch:
    """Decode metadata for `heads` heads of output width `width`; `splits(bs)` is the split count of a batch
    size (a function of the size only). Batches of at least `order_from` requests (0: none) also get their
    longest-first order, computed on the device (one small sort per step, shared by every layer); `plan`, when
    given, makes a decode step's balanced plan from its lengths (None for sizes that keep the per-request split;
    one launch per step, shared by every layer) for a step the caller marks `balanced`, a step with a plan needs
    no order, and `plan_rows(bs)` is the work items (scratch rows) of a plan for that size (0: none)."""

    def __init__(self, heads: int, width: int, splits: Callable[[int], int], device: torch.device,
                 order_from: int = 0,
                 plan: Optional[Callable[[torch.Tensor], Optional[BalancedPlan]]] = None,
                 plan_rows: Callable[[int], int] = lambda bs: 0) -> None:
        self.heads, self.width, self.splits, self.device = heads, width, splits, device
        self.order_from = order_from
        self.plan, self.plan_rows = plan, plan_rows
        self._graph: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def _step_splits(self, bs: int, balanced: bool) -> int:
        """Scratch slots per request of a decode step: its split count, or enough rows for its plan's items (the
        per-request launch reads its split count from the scratch's shape: it must be exact)."""
        return max(self.splits(bs), scratch_splits(bs, self.plan_rows(bs))) if balanced else self.splits(bs)

    def for_batch(self, req_rows: torch.Tensor, seq_lens: torch.Tensor, balanced: bool = False) -> DecodeMeta:
        """Fresh scratch for an eager decode step (`req_rows`, `seq_lens` may be a mixed pass's tail: copied
        when not 16-byte aligned, since Triton compiles a kernel again per alignment of a pointer). `balanced`: the
        step may get a balanced plan (a decode step of its own; a mixed pass's tail keeps the per-request split)."""
        req_rows, seq_lens = aligned(req_rows), aligned(seq_lens)
        bs = req_rows.shape[0]
        s = self._step_splits(bs, balanced)
        f32 = dict(dtype=torch.float32, device=self.device)
        return DecodeMeta(req_rows, seq_lens, torch.empty(bs, self.heads, s, self.width, **f32),
                          torch.empty(bs, self.heads, s, **f32), *self._order_or_plan(seq_lens, balanced))

    def init_graph(self, max_bs: int) -> None:
        """Static split scratch for every batch size up to `max_bs`."""
        elems = max(bs * self._step_splits(bs, True) for bs in range(1, max_bs + 1)) * self.heads
        f32 = dict(dtype=torch.float32, device=self.device)
        self._graph = (torch.empty(elems * self.width, **f32), torch.empty(elems, **f32))

    def for_replay(self, req_rows: torch.Tensor, seq_lens: torch.Tensor, balanced: bool = False) -> DecodeMeta:
        """Views of the static split scratch sized by the (padded) batch. `req_rows` and `seq_lens` are the graph
        runner's static buffers, which it refreshes before every replay: the kernels read them in place (no copy
        in the graph). `balanced` as `for_batch`'s."""
        assert self._graph is not None, "init_graph first; graphs are decode-only"
        mid_o, mid_lse = self._graph
        req_rows, seq_lens = aligned(req_rows), aligned(seq_lens)
        bs = req_rows.shape[0]
        s = self._step_splits(bs, balanced)
        n = bs * self.heads * s
        return DecodeMeta(req_rows, seq_lens, mid_o[:n * self.width].view(bs, self.heads, s, self.width),
                          mid_lse[:n].view(bs, self.heads, s), *self._order_or_plan(seq_lens, balanced))

    def _order_or_plan(self, seq_lens: torch.Tensor, balanced: bool) -> tuple[Optional[torch.Tensor],
                                                                                Optional[BalancedPlan]]:
        # a function of the batch size and `balanced` only, so a captured graph keeps whichever it was captured with
        plan = self.plan(seq_lens) if balanced and self.plan is not None else None
        order = longest_first(seq_lens) if plan is None and 0 < self.order_from <= seq_lens.shape[0] else None
        return order, plan


def aligned(t: torch.Tensor) -> torch.Tensor:
    """`t`, or a copy of it that starts on a 16-byte boundary."""
    return t if t.data_ptr() % 16 == 0 else t.clone()
