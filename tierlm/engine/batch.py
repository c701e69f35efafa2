"""`ScheduledBatch`: what the scheduler hands the engine for one forward pass."""
from __future__ import annotations

from dataclasses import dataclass, field

from tierlm.engine.request import Req


@dataclass
class ScheduledBatch:
    """Requests of one forward pass and how many new tokens each contributes (`extend_lens`)."""

    mode: str  # "prefill" | "decode" | "mixed" (decode requests, one token each, beside prefill chunks)
    reqs: list[Req]
    extend_lens: list[int]
    # request→token table entries to write on the device before the pass: (row, position) -> slot
    map_rows: list[int] = field(default_factory=list)
    map_positions: list[int] = field(default_factory=list)
    map_slots: list[int] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return sum(self.extend_lens)
