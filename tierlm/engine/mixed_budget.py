"""`MixedBudget`: how much prefill a mixed step (prefill chunks and the running decodes in one pass) takes.

A pass's rows are its decodes (rounded up to `decode_align`, the padding a captured pass gives them) plus its
prefill chunk. The pass is sized to the smallest of `rows` that holds the decodes and 1/`backlog_steps` of the
prefill tokens waiting, or to the whole `max_tokens` (`backlog_steps` 0, or a backlog over `burst_tokens`): a
lone prompt then costs its decodes a few small passes, and a burst drains in whole budgets, which slows the
decodes for a while but keeps its first tokens early. With `burst_prefill` a backlog over `burst_tokens` gets a
prefill step of its own instead (the decodes wait, as with mixed steps off): a burst then drains in passes of
up to the prefill budget, without the decodes' rows and attention in each.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class MixedBudget:
    """The mixed-step sizing of a scheduler; `max_tokens` 0: prefill and decode never share a pass."""

    max_tokens: int = 0
    decode_align: int = 1  # the decode count is rounded up to this
    rows: tuple[int, ...] = ()  # row counts a pass is sized to, ascending, the budget last (default: the budget)
    backlog_steps: int = 0
    burst_tokens: int = 0  # 0: never
    burst_prefill: bool = False  # past burst_tokens: a prefill step of its own, not the whole budget

    def decode_rows(self, decodes: int) -> int:
        """Rows `decodes` decodes take in a pass (rounded up to `decode_align`)."""
        return -(-decodes // self.decode_align) * self.decode_align

    def prefill_room(self, decodes: int, backlog: int) -> Optional[int]:
        """Prefill tokens a mixed step with `decodes` running decodes may take while `backlog` prefill tokens
        wait; None when there is no mixed step (no decodes, their rows fill the budget, or a burst that
        `burst_prefill` gives a prefill step of its own)."""
        decode_rows = self.decode_rows(decodes)
        if decodes == 0 or decode_rows >= self.max_tokens:
            return None
        burst = 0 < self.burst_tokens < backlog
        if burst and self.burst_prefill:
            return None
        if self.backlog_steps <= 0 or burst:
            return self.max_tokens - decode_rows
        want = decode_rows + -(-backlog // self.backlog_steps)
        rows = next((n for n in self.rows or (self.max_tokens,) if n >= want and n > decode_rows), self.max_tokens)
        return rows - decode_rows
