"""`Penalties`: repetition, presence and frequency penalties on a step's logits, kept on the device.

Each request that asks for a penalty holds one row of a device table of marks `[rows, vocab]` (int32): bit 0 says
the token is in its prompt, the bits above count how often the request has sampled it. The row is built from the
host's token ids at the request's first sampled pass and advanced on the device by every pass's sampled tokens,
so no step reads tokens back for it and a step launched before the host has seen the previous one's tokens (overlap
scheduling) still penalizes them. A row outlives retraction (it belongs to the request) and is reused once its
request has finished.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

import torch

from tierlm.utils.upload import upload

if TYPE_CHECKING:
    from tierlm.engine.request import Req

PROMPT_MARK = 1  # bit 0 of a mark: the token is in the prompt
COUNT_STEP = 2  # one sampled occurrence, counted above bit 0


def penalize(logits: torch.Tensor, marks: torch.Tensor, repetition: torch.Tensor, presence: torch.Tensor,
             frequency: torch.Tensor) -> torch.Tensor:
    """`logits` (float32 `[n, vocab]`) under the penalties of each row, given the rows' `marks` (`[n, vocab]`).
    A token seen in the prompt or the output has its logit divided by the repetition penalty when positive and
    multiplied by it otherwise; then a token sampled c > 0 times loses `frequency * c + presence`."""
    seen = marks != 0
    rep = repetition[:, None]
    logits = torch.where(seen, torch.where(logits > 0, logits / rep, logits * rep), logits)
    count = (marks >> 1).to(logits.dtype)
    return logits - count * frequency[:, None] - (count > 0).to(logits.dtype) * presence[:, None]


class Penalties:
    """The penalties of the rows of a pass that ask for them (`Req.params.penalized`): `apply` before sampling,
    `record` with the sampled tokens after. Holds no device memory until a request asks."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._marks: Optional[torch.Tensor] = None  # [capacity, vocab] int32
        self._owners: list[Optional["Req"]] = []  # the request holding each row of the table
        self._last: Optional[tuple[torch.Tensor, Optional[torch.Tensor]]] = None  # (table rows, pass rows) to record

    @property
    def rows_held(self) -> int:
        """Rows of the table held by unfinished requests."""
        return sum(r is not None and not r.finished for r in self._owners)

    def apply(self, logits: torch.Tensor, reqs: Sequence["Req"]) -> Optional[torch.Tensor]:
        """The pass's logits (one row per request of `reqs`) as float32 with every penalized row adjusted, or
        None when no request asks (then `record` does nothing). The input is left as it was (logprobs read it)."""
        picked = [i for i, r in enumerate(reqs) if r.penalized]
        self._last = None
        if not picked:
            return None
        table_rows = [self._row_of(reqs[i], logits.shape[-1]) for i in picked]
        params = [reqs[i].params for i in picked]
        dev = logits.device
        slots = upload(table_rows, torch.int64, dev)
        every = len(picked) == len(reqs)
        rows = None if every else upload(picked, torch.int64, dev)
        out = logits.float() if logits.dtype != torch.float32 else logits.clone()
        sub = out if every else out[rows]
        adjusted = penalize(sub, self._marks[slots], upload([p.repetition_penalty for p in params], torch.float32, dev),
                            upload([p.presence_penalty for p in params], torch.float32, dev),
                            upload([p.frequency_penalty for p in params], torch.float32, dev))
        if every:
            out = adjusted
        else:
            out[rows] = adjusted
        self._last = (slots, rows)
        return out

    def record(self, tokens: torch.Tensor) -> None:
        """Count the tokens sampled from the logits of the last `apply` (a device tensor, one per row of it)."""
        if self._last is None:
            return
        slots, rows = self._last
        self._last = None
        picked = tokens if rows is None else tokens[rows]
        marks = self._marks
        marks.index_put_((slots, picked.long()), torch.full_like(slots, COUNT_STEP, dtype=marks.dtype),
                         accumulate=True)

    def _row_of(self, req: "Req", vocab: int) -> int:
        """`req`'s row of the table (`vocab` wide: the logits'), made at its first pass from its prompt (and any
        outputs the host holds)."""
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
        """A row no unfinished request holds; the table doubles when every row is held."""
        for i, owner in enumerate(self._owners):
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
