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
    logprobs: Optional[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    event: Optional[torch.cuda.Event]

    @staticmethod
    def start(reqs: list[Req], tokens: torch.Tensor, logprobs) -> "InFlight":
        if tokens.device.type != "cuda":
            return InFlight(reqs, tokens, logprobs, None)
        pinned = torch.empty(tokens.shape, dtype=tokens.dtype, pin_memory=True)
        pinned.copy_(tokens, non_blocking=True)
        host_lp = None
        if logprobs is not None:
            host_lp = tuple(torch.empty(t.shape, dtype=t.dtype, pin_memory=True).copy_(t, non_blocking=True)
                            for t in logprobs)
        event = torch.cuda.Event()
        event.record()
        return InFlight(reqs, pinned, host_lp, event)

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
