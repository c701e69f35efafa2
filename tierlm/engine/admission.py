"""`new_request`: what `Engine.add_request` makes of an arriving request — its parameters and prompt checked
against the model, and the `Req` that carries it through the scheduler."""
from __future__ import annotations

from typing import Any

import torch

from tierlm.engine.detokenizer import IncrementalDetokenizer
from tierlm.engine.errors import RequestError
from tierlm.engine.request import Req
from tierlm.sampling_params import SamplingParams
from tierlm.validation import check_prompt_ids


def new_request(request_id: str, prompt_token_ids: list[int], params: SamplingParams, cache: bool, *,
                tokenizer: Any, vocab_size: int, max_model_len: int, device: torch.device) -> Req:
    """The `Req` of a new request; `RequestError` (or `PromptTooLongError`) for one the engine cannot serve. Its
    output is bounded by `max_tokens` and by what the context has left after the prompt."""
    params.validate(vocab_size)
    if tokenizer is None and params.detokenize:
        raise RequestError("the engine runs without a tokenizer (--skip-tokenizer-init): set detokenize=False")
    check_prompt_ids(prompt_token_ids, vocab_size, max_model_len)
    n = len(prompt_token_ids)
    room = max_model_len - n
    gen = None
    if params.seed is not None and not params.greedy:
        gen = torch.Generator(device=device).manual_seed(params.seed)
    return Req(request_id=request_id, prompt_len=n, token_ids=list(prompt_token_ids), params=params,
               max_new_tokens=room if params.max_tokens is None else min(params.max_tokens, room), generator=gen,
               cacheable=cache,
               detok=IncrementalDetokenizer(tokenizer, prompt_token_ids, params.stop, params.skip_special_tokens,
                                            params.include_stop_str_in_output) if params.detokenize else None,
               logprobs=[] if params.logprobs is not None else None, penalized=params.penalized,
               prompt_logprobs=[None] if params.prompt_logprobs is not None else None)
