"""What the engine hands back: per-step deltas (`StepOutput`) and finished results (`RequestOutput`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional, Union

if TYPE_CHECKING:
    from tierlm.engine.request import Req


@dataclass
class TokenLogprob:
    """Log-probability of a chosen token and the top-N alternatives at that position."""

    token_id: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)
    rank: Optional[int] = None  # 1 + the tokens likelier than it (prompt logprobs only)


@dataclass(slots=True)  # one per running request per step: slots make it cheaper to build and read
class StepOutput:
    """What one engine step produced for one request (a delta: only the new tokens and text)."""

    request_id: str
    new_token_ids: list[int]
    new_text: str
    new_logprobs: Optional[list[TokenLogprob]]
    finished: bool
    finish_reason: Optional[str]  # "stop" | "length" | "abort" | None while running
    num_prompt_tokens: int
    num_cached_tokens: int
    num_output_tokens: int
    error: Optional[str] = None
    stop_reason: Union[int, str, None] = None  # the stop string or stop token id that ended it (vLLM's)
    # with prompt_logprobs, on a request's first output: one entry per prompt token (None for the first)
    prompt_logprobs: Optional[list[Optional[TokenLogprob]]] = None


@dataclass
class RequestOutput:
    """Final result of one request of `LLM.generate`."""

    request_id: str
    prompt_token_ids: list[int]
    text: str
    token_ids: list[int]
    finish_reason: Optional[str]
    num_cached_tokens: int
    ttft: float
    logprobs: Optional[list[TokenLogprob]] = None
    error: Optional[str] = None
    stop_reason: Union[int, str, None] = None  # the stop string or stop token id that ended it (vLLM's)
    prompt_logprobs: Optional[list[Optional[TokenLogprob]]] = None  # entry 0 None: nothing precedes the first


def step_output(req: "Req", new_ids: list[int]) -> StepOutput:
    """The step's output of `req` carrying `new_ids` (a list of its own: the output keeps it). Runs for every
    running request every step: `Req`'s properties are spelled out. Its output count is what the host has
    read back, never a token still in flight (a request that stops drops that one)."""
    first = req.emitted_tokens
    req.emitted_tokens = last = first + len(new_ids)
    finished = req.finish_reason is not None
    return StepOutput(req.request_id, new_ids, req.detok.delta(final=finished) if req.params.detokenize else "",
                      req.logprobs[first:last] if req.logprobs is not None else None, finished,
                      req.finish_reason, req.prompt_len, req.num_cached_tokens,
                      len(req.token_ids) - req.prompt_len, req.error, req.stop_reason,
                      req.prompt_logprobs if first == 0 else None)
