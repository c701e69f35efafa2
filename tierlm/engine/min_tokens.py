"""`MinTokens`: vLLM's `min_tokens` — a request may not stop before it has generated that many tokens.

Until then its stop ids (the end-of-sequence ids unless `ignore_eos`, and its `stop_token_ids`) are masked out of
each pass's logits (`bans`, through `engine.logit_bias`), and the engine matches no stop string in the text of
those tokens. The (min_tokens + 1)-th token may be a stop id, as in vLLM. Passes look at their requests only
while a request that asked is unfinished and under its count, so every other pass pays one set test.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Collection, Optional, Sequence

if TYPE_CHECKING:
    from tierlm.engine.request import Req


class MinTokens:
    """The engine's requests still under their `min_tokens` (by request id) and the model's end-of-sequence
    ids."""

    def __init__(self, eos_ids: Collection[int]) -> None:
        self.eos_ids = frozenset(eos_ids)
        self._open: set[str] = set()

    def expect(self, req: "Req") -> None:
        """Note a new request (the engine calls this for every one)."""
        if req.params.min_tokens:
            self._open.add(req.request_id)

    def done(self, req: "Req") -> None:
        """`req` finished, or is past its count: passes need not look at it again."""
        self._open.discard(req.request_id)

    def early(self, req: "Req") -> bool:
        """Whether the token `req` just appended comes too early to stop it (it is within the first
        `min_tokens`); the first that is not ends the watch over `req`."""
        if len(req.token_ids) - req.prompt_len <= req.params.min_tokens:
            return True
        self.done(req)
        return False

    def bans(self, reqs: Sequence["Req"]) -> Optional[list[Optional[list[int]]]]:
        """Per request of a pass sampling one token each: the ids it may not pick now, or None for all of them
        when none is under its count. A request's tokens in flight (`num_pending`) count as generated."""
        if not self._open:
            return None
        out: Optional[list[Optional[list[int]]]] = None
        for i, r in enumerate(reqs):
            p = r.params
            if p.min_tokens and len(r.token_ids) + r.num_pending - r.prompt_len < p.min_tokens:
                if out is None:
                    out = [None] * len(reqs)
                out[i] = sorted(set(p.stop_token_ids) | (set() if p.ignore_eos else self.eos_ids))
        return out
