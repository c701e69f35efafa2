"""Native `/generate`: token ids (or text) in, text and token ids out, with TierLM's own sampling fields."""
from __future__ import annotations

import uuid
from typing import Any, AsyncIterator, Optional

from fastapi import APIRouter, Request
from fastapi.responses import Response

from tierlm.sampling_params import SamplingParams
from tierlm.server import formatting as fmt
from tierlm.server.errors import APIError, error_body
from tierlm.server.generation import Generation
from tierlm.server.protocol import GenerateRequest
from tierlm.server.responses import GenerateResponse, error_responses
from tierlm.server.requests import fan_out, logit_bias, need_tokenizer, validated
from tierlm.server.state import get_state
from tierlm.server.streaming import respond


def _logprobs(lps: list) -> list[dict[str, Any]]:
    return [{"token_id": lp.token_id, "logprob": lp.logprob, "top": [[t, v] for t, v in lp.top]} for lp in lps]


def _prompt_logprobs(lps: list) -> list[Optional[dict[str, Any]]]:
    """Per prompt token null (the first) or its logprob, rank and top alternatives."""
    return [None if lp is None else {"token_id": lp.token_id, "logprob": lp.logprob, "rank": lp.rank,
                                     "top": [[t, v] for t, v in lp.top]} for lp in lps]


async def generate(body: GenerateRequest, request: Request) -> Response:
    st = get_state(request)
    if (body.input_ids is None) == (body.text is None):
        raise APIError(400, "give exactly one of input_ids or text", "input_ids")
    sp = body.sampling_params
    # the model's defaults (generation_config.json) for the sampling fields the request leaves unset
    defaults = {k: v for k, v in st.info.sampling_defaults.items() if k not in sp.model_fields_set}
    params = SamplingParams(**{**sp.model_dump(), **defaults,
                               "logit_bias": logit_bias(sp.logit_bias, "sampling_params.logit_bias")})
    params.detokenize = st.tokenizer is not None  # without a tokenizer: token ids only
    validated(params, st.info, "sampling_params.")
    if body.input_ids is not None:
        ids = list(body.input_ids)
        what = "input_ids"
    else:
        ids = await need_tokenizer(st.encoder).encode(body.text or "", "text")
        what = "text"
    subs = fan_out(f"gen-{uuid.uuid4().hex}", [(ids, body.text or "")], 1, params, st.info, what,
                   "sampling_params.max_tokens")
    gen = Generation(st.client, subs, st.metrics)
    want_lps, want_plps = sp.logprobs is not None, sp.prompt_logprobs is not None

    def build(gen: Generation, results: dict[str, dict]) -> dict[str, Any]:
        r = next(iter(results.values()))
        return {"text": r["text"], "output_ids": r["ids"], "finish_reason": r["finish_reason"],
                "stop_reason": r["stop_reason"], "prompt_tokens": r["prompt"],
                "completion_tokens": r["output"] or len(r["ids"]),
                "cached_tokens": r["cached"], "logprobs": _logprobs(r["logprobs"]) if want_lps else None,
                "prompt_logprobs": _prompt_logprobs(r["prompt_logprobs"] or []) if want_plps else None}

    async def events(gen: Generation) -> AsyncIterator[str]:
        async for _, o in gen.outputs():
            if o.error:
                yield fmt.sse(error_body(500, f"generation failed: {o.error}", None, "engine_error"))
                break
            event: dict[str, Any] = {"text": o.new_text, "output_ids": o.new_token_ids,
                                     "finish_reason": o.finish_reason if o.finished else None}
            if want_lps:
                event["logprobs"] = _logprobs(o.new_logprobs or [])
            if o.prompt_logprobs is not None:  # with the first output
                event["prompt_logprobs"] = _prompt_logprobs(o.prompt_logprobs)
            if o.finished:
                event.update(stop_reason=o.stop_reason, prompt_tokens=o.num_prompt_tokens,
                             completion_tokens=o.num_output_tokens, cached_tokens=o.num_cached_tokens)
            yield fmt.sse(event)
        yield fmt.DONE

    return await respond(request, gen, body.stream, events, build)


def native_router() -> APIRouter:
    """The native routes (a fresh router per app)."""
    router = APIRouter()
    router.add_api_route("/generate", generate, methods=["POST"], responses=error_responses(),
                         response_model=GenerateResponse, summary="Generate from token ids or text (TierLM native)")
    return router
