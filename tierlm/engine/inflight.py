"""`InFlight`: a launched step whose sampled tokens are still on their way back from the device."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from tierlm.engine.outputs import TokenLogprob
from tierlm.engine.request import Req


@dataclass
class InFlight:
    """Host copies of a step's tokens (and logprobs), filled by non-blocking copies; `wait` syncs on the
    step's event only, never on the whole device."""

    reqs: list[Req]
    tokens: torch.Tensor
    logprobs: Optional[tuple[torch.Tensor, ...]]
    event: Optional[torch.cuda.Event]

    def wait(self) -> tuple[list[int], Optional[Callable[[int, int], TokenLogprob]]]:
        """Token ids per request, and a function (row, top_n) -> TokenLogprob when logprobs were computed."""
        if self.event is not None:
            self.event.synchronize()
        tokens = self.tokens.tolist()
        if self.logprobs is None:
            return tokens, None
        chosen, top_v, top_i = (t.tolist() for t in self.logprobs)

        def logprob(row: int, n: int) -> TokenLogprob:
            return TokenLogprob(token_id=tokens[row], logprob=chosen[row],
                                top=list(zip(top_i[row][:n], top_v[row][:n])) if n else [])
        return tokens, logprob


class Readback:
    """Starts the device→host copies of a step's results into pinned buffers that are reused.

    Two sets of buffers (and their events) alternate: at most two steps are in flight (overlap), and a step's
    buffers are only reused after it has been resolved.
    """

    def __init__(self, device: torch.device, max_rows: int) -> None:
        self.device = device
        self.max_rows = max_rows
        self._bufs: list[dict[str, torch.Tensor]] = [{}, {}]
        self._events = [torch.cuda.Event(), torch.cuda.Event()] if device.type == "cuda" else []
        self._turn = 0

    def _host(self, slot: dict, name: str, src: torch.Tensor) -> torch.Tensor:
        buf = slot.get(name)
        rows = max(self.max_rows, src.shape[0])
        if buf is None or buf.shape[0] < src.shape[0] or buf.shape[1:] != src.shape[1:] or buf.dtype != src.dtype:
            buf = slot[name] = torch.empty((rows, *src.shape[1:]), dtype=src.dtype, pin_memory=True)
        out = buf[:src.shape[0]]
        out.copy_(src, non_blocking=True)
        return out

    def start(self, reqs: list[Req], tokens: torch.Tensor, logprobs) -> InFlight:
        if self.device.type != "cuda":
            return InFlight(reqs, tokens, logprobs, None)
        slot_index, self._turn = self._turn, 1 - self._turn
        slot = self._bufs[slot_index]
        host_tokens = self._host(slot, "tokens", tokens)
        host_lp = None
        if logprobs is not None:
            host_lp = tuple(self._host(slot, f"lp{i}", t) for i, t in enumerate(logprobs))
        event = self._events[slot_index]  # the slot's own: its last step was resolved before it was reused
        event.record()
        return InFlight(reqs, host_tokens, host_lp, event)
