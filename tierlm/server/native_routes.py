"""Native `/generate`: token ids (or text) in, text and token ids out, with TierLM's own sampling fields; SGLang's
spellings of its fields and its `meta_info` too, so SGLang's clients (and SGLang's router forwarding them) work."""
from __future__ import annotations

import time
import uuid
from typing import Any, AsyncIterator, Optional

from fastapi import APIRouter, Request
from fastapi.responses import Response

from tierlm.sampling_params import SamplingParams
from tierlm.server import formatting as fmt
from tierlm.server.errors import APIError, error_body
from tierlm.server.generation import Generation
from tierlm.server.native_meta import meta_info, triples
from tierlm.server.protocol import GenerateRequest, NativeSamplingParams
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


UNSUPPORTED_SWITCHES = ("return_hidden_states", "background", "return_bytes", "return_entropy")  # SGLang's
# SGLang's spelling -> ours
SGLANG_NAMES = (("max_new_tokens", "max_tokens"), ("min_new_tokens", "min_tokens"),
                ("no_stop_trim", "include_stop_str_in_output"), ("sampling_seed", "seed"))


def _fields(body: GenerateRequest) -> tuple[dict[str, Any], set[str]]:
    """The request's sampling fields in our spelling (SGLang's mapped; both spellings of one field: 400), with
    SGLang's logprob fields folded in, and the names the request set."""
    sp: NativeSamplingParams = body.sampling_params
    fields = sp.model_dump(exclude={theirs for theirs, _ in SGLANG_NAMES})
    given = set(sp.model_fields_set)
    for theirs, ours in SGLANG_NAMES:
        value = getattr(sp, theirs)
        if value is None:
            continue
        if ours in given:
            raise APIError(400, f"give sampling_params.{ours} or {theirs}, not both", f"sampling_params.{theirs}")
        fields[ours] = value
        given.add(ours)
    if body.return_logprob:
        fields["logprobs"] = max(fields["logprobs"] or 0, body.top_logprobs_num)
        if body.logprob_start_len >= 0:
            fields["prompt_logprobs"] = max(fields["prompt_logprobs"] or 0, body.top_logprobs_num)
    return fields, given


async def generate(body: GenerateRequest, request: Request) -> Response:
    st = get_state(request)
    started = time.monotonic()
    if (body.input_ids is None) == (body.text is None):
        raise APIError(400, "give exactly one of input_ids or text", "input_ids")
    for name in UNSUPPORTED_SWITCHES:
        if getattr(body, name):
            raise APIError(400, f"{name} is not supported (only false)", name, "unsupported")
    sp = body.sampling_params
    fields, given = _fields(body)
    prompt_only = fields["max_tokens"] == 0  # SGLang's max_new_tokens 0: the prompt scored, no output
    # the model's defaults (generation_config.json) for the sampling fields the request leaves unset
    defaults = {k: v for k, v in st.info.sampling_defaults.items() if k not in given}
    params = SamplingParams(**{**fields, **defaults, "max_tokens": 1 if prompt_only else fields["max_tokens"],
                               "logit_bias": logit_bias(sp.logit_bias, "sampling_params.logit_bias")})
    params.detokenize = st.tokenizer is not None  # without a tokenizer: token ids only
    validated(params, st.info, "sampling_params.")
    if body.input_ids is not None:
        ids = list(body.input_ids)
        what = "input_ids"
    else:
        ids = await need_tokenizer(st.encoder).encode(body.text or "", "text")
        what = "text"
    if body.return_logprob and body.logprob_start_len >= len(ids):
        raise APIError(400, f"logprob_start_len: {body.logprob_start_len} is not inside the prompt's {len(ids)} "
                            "tokens", "logprob_start_len")
    rid = f"gen-{uuid.uuid4().hex}"
    subs = fan_out(rid, [(ids, body.text or "")], 1, params, st.info, what,
                   "sampling_params.max_new_tokens" if sp.max_new_tokens is not None else "sampling_params.max_tokens")
    gen = Generation(st.client, subs, st.metrics, prompt_only)
    want_lps, want_plps = sp.logprobs is not None, sp.prompt_logprobs is not None
    rid = body.rid or rid

    def sglang_logprobs(out_lps: list, plps: Optional[list]) -> Optional[dict[str, Any]]:
        """SGLang's logprob fields of `meta_info` (with `return_logprob`)."""
        if not body.return_logprob:
            return None
        top, text = body.top_logprobs_num, body.return_text_in_logprobs
        got: dict[str, Any] = {}
        got["output_token_logprobs"], tops = triples(st.tokenizer, out_lps, None, text, top)
        if tops is not None:
            got["output_top_logprobs"] = tops
        if plps is not None and body.logprob_start_len >= 0:
            start = body.logprob_start_len
            got["input_token_logprobs"], tops = triples(st.tokenizer, plps[start:], ids[0], text, top)
            if tops is not None:
                got["input_top_logprobs"] = tops
        return got

    def build(gen: Generation, results: dict[str, dict]) -> dict[str, Any]:
        r = next(iter(results.values()))
        r = {**r, "output": r["output"] or len(r["ids"])}
        return {"text": r["text"], "output_ids": r["ids"], "finish_reason": r["finish_reason"],
                "stop_reason": r["stop_reason"], "prompt_tokens": r["prompt"], "completion_tokens": r["output"],
                "cached_tokens": r["cached"], "logprobs": _logprobs(r["logprobs"]) if want_lps else None,
                "prompt_logprobs": _prompt_logprobs(r["prompt_logprobs"] or []) if want_plps else None,
                "meta_info": meta_info(rid, r, time.monotonic() - started,
                                       sglang_logprobs(r["logprobs"], r["prompt_logprobs"]))}

    async def events(gen: Generation) -> AsyncIterator[str]:
        last_id: Optional[int] = None
        async for _, o in gen.outputs():
            if o.error:
                yield fmt.sse(error_body(500, f"generation failed: {o.error}", None, "engine_error"))
                break
            last_id = o.new_token_ids[-1] if o.new_token_ids else last_id
            so_far = {"finish_reason": o.finish_reason, "stop_reason": o.stop_reason, "error": o.error,
                      "ids": [] if last_id is None else [last_id], "prompt": o.num_prompt_tokens,
                      "output": o.num_output_tokens, "cached": o.num_cached_tokens}
            event: dict[str, Any] = {"text": o.new_text, "output_ids": o.new_token_ids,
                                     "finish_reason": o.finish_reason if o.finished else None,
                                     "meta_info": meta_info(rid, so_far, time.monotonic() - started,
                                                            sglang_logprobs(o.new_logprobs or [], o.prompt_logprobs))}
            if want_lps:
                event["logprobs"] = _logprobs(o.new_logprobs or [])
            if want_plps and o.prompt_logprobs is not None:  # with the first output
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
