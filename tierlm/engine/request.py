"""`Req`: one request's tokens, KV bookkeeping and decoding state as the scheduler sees it."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from tierlm.engine.outputs import TokenLogprob
from tierlm.kvcache.radix import RadixNode
from tierlm.sampling_params import SamplingParams


@dataclass(eq=False)
class Req:
    """A request: `token_ids` = prompt + outputs; KV is valid for the first `kv_len` of them.

    `extend_len` (tokens that still need a forward pass) unifies prefill (whole prompt), chunked
    prefill (the rest of it) and decode (the last sampled token).
    """

    request_id: str
    prompt_len: int
    token_ids: list[int]
    params: SamplingParams
    max_new_tokens: int
    arrival: float = field(default_factory=time.perf_counter)
    row: Optional[int] = None
    pages: list[int] = field(default_factory=list)
    prefix_node: Optional[RadixNode] = None
    num_prefix_pages: int = 0
    kv_len: int = 0
    num_cached_tokens: int = 0
    num_recomputed: int = 0  # prefix tokens it computed before rejoining after an L3 split (not cached)
    expected_prefill: int = 0  # prefill tokens beyond its L1/L2 match when it arrived (its queue's backlog)
    first_token_time: Optional[float] = None
    generator: Optional[torch.Generator] = None
    detok: Any = None
    logprobs: Optional[list[TokenLogprob]] = None
    # with params.prompt_logprobs: entry p scores prompt token p (None for the first), filled as passes run
    prompt_logprobs: Optional[list[Optional[TokenLogprob]]] = None
    finish_reason: Optional[str] = None
    stop_reason: Any = None  # the stop string or stop token id that ended it; None for end-of-sequence
    error: Optional[str] = None
    emitted_tokens: int = 0
    num_pending: int = 0  # sampled on the device, not yet seen by the host (overlap scheduling)
    decodable: bool = False  # its last pass (at its current row) sampled: the next input is in the token table
    cacheable: bool = True  # False: its KV never enters the prefix cache (warm-ups)
    guided: bool = False  # its output follows a grammar (`engine.guided`): a pass holding it samples once its
    # token in flight is read back
    penalized: bool = False  # its params ask for a penalty (`engine.penalties`), read every pass
    penalty_row: Optional[int] = None  # its row of the penalties' table, made at its first sampled pass

    @property
    def seq_len(self) -> int:
        return len(self.token_ids) + self.num_pending

    @property
    def extend_len(self) -> int:
        return self.seq_len - self.kv_len

    @property
    def num_output_tokens(self) -> int:
        """Output tokens sampled so far, including those still in flight."""
        return self.seq_len - self.prompt_len

    @property
    def prefilling(self) -> bool:
        """Needs a prefill pass (new prompt, next chunk, or a resumed request): its next input tokens come
        from the host, not from the device token table."""
        return not self.decodable

    @property
    def fully_scheduled(self) -> bool:
        """All output tokens are sampled or in flight: the request needs no further forward pass."""
        return self.num_output_tokens >= self.max_new_tokens

    @property
    def max_seq_len(self) -> int:
        return self.prompt_len + self.max_new_tokens

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None
