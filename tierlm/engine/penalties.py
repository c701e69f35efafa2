"""`Penalties`: repetition, presence and frequency penalties on a step's logits, kept on the device.

Each request that asks for a penalty holds one row of a device table of marks `[rows, vocab]` (int32): bit 0 says
the token is in its prompt, the bits above count how often the request has sampled it. The row is built from the
host's token ids at the request's first sampled pass and advanced on the device by every pass's sampled tokens,
so no step reads tokens back for it and a step launched before the host has seen the previous one's tokens (overlap
scheduling) still penalizes them. A row outlives retraction (it belongs to the request) and is reused once its
request has finished. Row 0 belongs to no request: the rows of a pass that ask for nothing point there with
neutral factors, under which `penalize` returns their logits unchanged, bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence

import torch

from tierlm.utils.upload import upload

if TYPE_CHECKING:
    from tierlm.engine.request import Req

PROMPT_MARK = 1  # bit 0 of a mark: the token is in the prompt
COUNT_STEP = 2  # one sampled occurrence, counted above bit 0
NEUTRAL = (1.0, 0.0, 0.0)  # (repetition, presence, frequency) of a row without penalties


def penalize(logits: torch.Tensor, marks: torch.Tensor, repetition: torch.Tensor, presence: torch.Tensor,
             frequency: torch.Tensor) -> torch.Tensor:
    """`logits` (float32 `[n, vocab]`) under the penalties of each row, given the rows' `marks` (`[n, vocab]`).
    A token seen in the prompt or the output has its logit divided by the repetition penalty when positive and
    multiplied by it otherwise; then a token sampled c > 0 times loses `frequency * c + presence` (each operation
    rounded on its own: the fused sampler computes the same values)."""
    seen = marks != 0
    rep = repetition[:, None]
    logits = torch.where(seen, torch.where(logits > 0, logits / rep, logits * rep), logits)
    count = (marks >> 1).to(logits.dtype)
    return logits - count * frequency[:, None] - (count > 0).to(logits.dtype) * presence[:, None]


@dataclass(frozen=True)
class PenaltyBatch:
    """A pass's penalties: the table of `marks`, each row's `slots` (int32 `[B]`, 0 = none) and `factors` (float32
    `[B, 3]`: repetition, presence, frequency). The fused sampler takes them as they are; otherwise `adjust` the
    logits before sampling and `record` the sampled tokens after."""

    marks: torch.Tensor
    slots: torch.Tensor
    factors: torch.Tensor
    rows: Optional[torch.Tensor] = None  # the penalized rows (int64), when not every row is

    def adjust(self, logits: torch.Tensor, own: bool = False) -> torch.Tensor:
        """The pass's logits as float32 with every row's penalties applied (a new tensor, unless `own`: float32
        logits the caller made for this pass, written in place). Only the penalized rows are computed: a few
        penalized requests in a large batch cost a few rows' work."""
        if self.rows is None:
            f = self.factors
            return penalize(logits.float(), self.marks[self.slots.long()], f[:, 0], f[:, 1], f[:, 2])
        # a copy even of float32 logits (logprobs read the original), unless they are the caller's own
        out = logits if own and logits.dtype == torch.float32 else logits.to(torch.float32, copy=True)
        f = self.factors[self.rows]
        out[self.rows] = penalize(out[self.rows], self.marks[self.slots[self.rows].long()], f[:, 0], f[:, 1], f[:, 2])
        return out

    def record(self, tokens: torch.Tensor) -> None:
        """Count each row's sampled token in its marks (rows without penalties count in row 0, never read)."""
        slots = self.slots.long()
        self.marks.index_put_((slots, tokens.long()), torch.full_like(slots, COUNT_STEP, dtype=self.marks.dtype),
                              accumulate=True)


class Penalties:
    """The table of marks of the requests that ask for a penalty (`Req.penalized`); `batch` gives a pass's
    `PenaltyBatch`. Holds no device memory until a request asks."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._marks: Optional[torch.Tensor] = None  # [capacity, vocab] int32; row 0 is no request's
        self._owners: list[Optional["Req"]] = [None]  # the request holding each row of the table
        self.active = False  # set by `expect` at the first request that asks: until then a pass looks at nothing

    def expect(self, req: "Req") -> None:
        """Note a new request (the engine calls this for every one): passes look for penalties from the first
        that asks."""
        self.active = self.active or req.penalized

    @property
    def rows_held(self) -> int:
        """Rows of the table held by unfinished requests."""
        return sum(r is not None and not r.finished for r in self._owners)

    def batch(self, reqs: Sequence["Req"], vocab: int) -> Optional[PenaltyBatch]:
        """The penalties of a pass sampling one token for each of `reqs` from logits `vocab` wide, or None when
        none of them asks."""
        if not self.active or not any(r.penalized for r in reqs):
            return None
        slots, factors, picked = [], [], []
        for i, r in enumerate(reqs):
            if r.penalized:
                p = r.params
                slots.append(self._row_of(r, vocab))
                factors += (p.repetition_penalty, p.presence_penalty, p.frequency_penalty)
                picked.append(i)
            else:
                slots.append(0)
                factors += NEUTRAL
        rows = None if len(picked) == len(reqs) else upload(picked, torch.int64, self.device)
        return PenaltyBatch(self._marks, upload(slots, torch.int32, self.device),
                            upload(factors, torch.float32, self.device).view(-1, 3), rows)

    def _row_of(self, req: "Req", vocab: int) -> int:
        """`req`'s row of the table, made at its first pass from its prompt (and any outputs the host holds)."""
        if req.penalty_row is not None:
            return req.penalty_row
        row = self._free_row(vocab)
        self._owners[row] = req
        req.penalty_row = row
        marks = self._marks[row]
        marks.zero_()
        ids = req.token_ids
        marks[upload(ids[:req.prompt_len], torch.int64, self.device)] = PROMPT_MARK
        if len(ids) > req.prompt_len:
            out = upload(ids[req.prompt_len:], torch.int64, self.device)
            marks.index_add_(0, out, torch.full_like(out, COUNT_STEP, dtype=marks.dtype))
        return row

    def _free_row(self, vocab: int) -> int:
        """A row (not 0) no unfinished request holds; the table doubles when every row is held."""
        for i in range(1, len(self._owners)):
            owner = self._owners[i]
            if owner is None or owner.finished:
                if owner is not None:
                    owner.penalty_row = None
                self._owners[i] = None
                return i
        old = len(self._owners)
        grown = torch.zeros((max(2 * old, 8), vocab), dtype=torch.int32, device=self.device)
        if self._marks is not None:
            grown[:old] = self._marks
        self._marks = grown
        self._owners += [None] * (grown.shape[0] - old)
        return old
