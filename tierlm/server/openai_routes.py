"""/v1/completions and /v1/chat/completions: non-streaming JSON and SSE streams in OpenAI's format."""
from __future__ import annotations

import time
import uuid
from dataclasses import replace
from typing import Any, AsyncIterator, Optional

from fastapi import APIRouter, Request
from fastapi.responses import Response

from tierlm.server import formatting as fmt
from tierlm.server.chat_output import ChoiceOutput
from tierlm.server.chat_render import chat_prompt, tool_parser_for
from tierlm.server.errors import APIError, error_body
from tierlm.server.generation import Generation
from tierlm.server.protocol import ChatCompletionRequest, CompletionRequest
from tierlm.server.requests import (SubRequest, check_model, completion_prompts, fan_out, need_tokenizer,
                                    sampling_params, unsupported)
from tierlm.server.responses import ChatCompletionResponse, CompletionResponse, error_responses
from tierlm.server.state import get_state
from tierlm.server.streaming import respond


def _count(gen: Generation, finals: dict[str, Any]) -> dict[str, Any]:
    prompts = {rid: (o.num_prompt_tokens, o.num_cached_tokens) for rid, o in finals.items()}
    outputs = {rid: o.num_output_tokens for rid, o in finals.items()}
    return fmt.usage(gen.subs.values(), prompts, outputs)


def _so_far(prompt: int, completion: int) -> dict[str, int]:
    """One choice's usage so far (`stream_options.continuous_usage_stats`, as vLLM counts it)."""
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _continuous(body: Any) -> bool:
    opts = body.stream_options
    return bool(opts and opts.include_usage and opts.continuous_usage_stats)


def _result_usage(gen: Generation, results: dict[str, dict]) -> dict[str, Any]:
    prompts = {rid: (r["prompt"], r["cached"]) for rid, r in results.items()}
    outputs = {rid: r["output"] or len(r["ids"]) for rid, r in results.items()}
    return fmt.usage(gen.subs.values(), prompts, outputs)


async def create_completion(body: CompletionRequest, request: Request) -> Response:
    st = get_state(request)
    check_model(body.model, st.info)
    unsupported(body)
    ids_only = st.encoder is None  # --skip-tokenizer-init: token-id prompts, token ids out (text stays "")
    if ids_only and body.logprobs is not None:
        need_tokenizer(st.encoder, "logprobs")
    echo = bool(body.echo)
    if echo and ids_only:
        need_tokenizer(st.encoder, "echo")
    prompt_only = body.max_tokens == 0  # as vLLM: the echoed prompt alone (log-likelihood harnesses send it)
    if prompt_only and not echo:
        raise APIError(400, "max_tokens: 0 asks for no output, which only makes sense with echo", "max_tokens")
    # echo with logprobs scores the prompt (OpenAI's legacy form of what vLLM calls prompt_logprobs)
    scored = body.logprobs if echo and body.logprobs is not None else None
    if body.prompt_logprobs is not None:
        scored = max(scored or 0, body.prompt_logprobs)
    params = sampling_params(body, 16 if body.max_tokens is None else max(body.max_tokens, 1), body.logprobs, st.info,
                             detokenize=not ids_only, prompt_logprobs=scored)
    prompts = await completion_prompts(body, st.encoder)
    rid = f"cmpl-{uuid.uuid4().hex}"
    gen = Generation(st.client, fan_out(rid, prompts, body.n or 1, params, st.info), st.metrics, prompt_only)
    created = int(time.time())
    want_lps = body.logprobs is not None
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    continuous = _continuous(body)

    def head(s: SubRequest, plps: Optional[list]) -> tuple[str, Optional[dict[str, Any]]]:
        """An echoed choice's prompt text and (with logprobs) its prompt's legacy logprobs."""
        text = s.prompt_text or st.tokenizer.decode(s.token_ids)
        return text, fmt.echo_logprobs(st.tokenizer, s.token_ids, plps or []) if want_lps else None

    def build(gen: Generation, results: dict[str, dict]) -> dict[str, Any]:
        choices = []
        for s in sorted(gen.subs.values(), key=lambda s: s.index):
            r = results[s.rid]
            text, lps = head(s, r["prompt_logprobs"]) if echo else ("", None)
            if want_lps:
                tail = fmt.completion_logprobs(st.tokenizer, r["logprobs"], sum(map(len, lps["tokens"])) if lps else 0)
                lps = fmt.joined_logprobs(lps, tail) if lps else tail
            plps = fmt.prompt_logprobs(st.tokenizer, r["prompt_logprobs"] or []) if body.prompt_logprobs is not None \
                else None
            choices.append({"index": s.index, "text": text + r["text"], "logprobs": lps,
                            "finish_reason": r["finish_reason"], "stop_reason": r["stop_reason"],
                            "prompt_logprobs": plps})
        return {"id": rid, "object": "text_completion", "created": created, "model": st.info.model_name,
                "choices": choices, "usage": _result_usage(gen, results)}

    async def events(gen: Generation) -> AsyncIterator[str]:
        finals: dict[str, Any] = {}
        offsets: dict[str, int] = {}
        token_chunk = fmt.TokenChunks({"id": rid, "object": "text_completion", "created": created,
                                       "model": st.info.model_name}, chat=False)
        echoed: set[str] = set()
        async for s, o in gen.outputs():
            if o.error:
                yield fmt.sse(error_body(500, f"generation failed: {o.error}", None, "engine_error"))
                break
            if o.finished:
                finals[s.rid] = o
            echo_text, echo_lps = "", None
            if echo and s.rid not in echoed:  # the prompt goes out with the choice's first output
                echoed.add(s.rid)
                echo_text, echo_lps = head(s, o.prompt_logprobs)
                offsets[s.rid] = sum(map(len, echo_lps["tokens"])) if echo_lps else 0
            # without a tokenizer every output still gets its (empty-text) chunk: one per token while it keeps up
            if not (o.new_text or echo_text or o.finished or (want_lps and o.new_logprobs)
                    or (ids_only and o.new_token_ids)):
                continue
            lps = None
            if want_lps:  # offsets advance by the tokens' own texts, as the answer without streaming counts them
                at = offsets.get(s.rid, 0)
                lps = fmt.completion_logprobs(st.tokenizer, o.new_logprobs or [], at)
                offsets[s.rid] = at + sum(map(len, lps["tokens"]))
                lps = fmt.joined_logprobs(echo_lps, lps) if echo_lps else lps
            if lps is None and not o.finished and not continuous:
                yield token_chunk(s.index, echo_text + o.new_text)
                continue
            event = {"id": rid, "object": "text_completion", "created": created, "model": st.info.model_name,
                     "choices": [{"index": s.index, "text": echo_text + o.new_text, "logprobs": lps,
                                  "finish_reason": o.finish_reason if o.finished else None,
                                  "stop_reason": o.stop_reason}]}
            if continuous:
                event["usage"] = _so_far(o.num_prompt_tokens, o.num_output_tokens)
            yield fmt.sse(event)
        if include_usage:
            yield fmt.sse({"id": rid, "object": "text_completion", "created": created, "model": st.info.model_name,
                           "choices": [], "usage": _count(gen, finals)})
        yield fmt.DONE

    return await respond(request, gen, bool(body.stream), events, build)


async def create_chat_completion(body: ChatCompletionRequest, request: Request) -> Response:
    st = get_state(request)
    check_model(body.model, st.info)
    encoder = need_tokenizer(st.encoder)
    unsupported(body)
    if body.top_logprobs is not None and not body.logprobs:
        raise APIError(400, "top_logprobs requires logprobs: true", "top_logprobs")
    if body.max_tokens is not None and body.max_completion_tokens is not None:
        raise APIError(400, "give max_tokens or max_completion_tokens, not both", "max_completion_tokens")
    max_field = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
    max_tokens: Optional[int] = body.max_completion_tokens or body.max_tokens
    logprobs = (body.top_logprobs or 0) if body.logprobs else None
    params = sampling_params(body, max_tokens, logprobs, st.info)
    tools, forced = tool_parser_for(body, st.tools)
    if forced is not None:  # the answer is held to the forced calls' schema
        params = replace(params, json_schema=forced)
    ids, text = await chat_prompt(body, encoder)
    rid = f"chatcmpl-{uuid.uuid4().hex}"
    gen = Generation(st.client, fan_out(rid, [(ids, text)], body.n or 1, params, st.info, "messages", max_field),
                     st.metrics)
    created = int(time.time())
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    continuous = _continuous(body)
    parser = st.reasoning if body.separate_reasoning is not False else None

    def output() -> ChoiceOutput:
        return ChoiceOutput(parser, body.stream_reasoning is not False, tools, body.parallel_tool_calls is not False)

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> str:
        return fmt.sse({"id": rid, "object": "chat.completion.chunk", "created": created,
                        "model": st.info.model_name, "choices": choices, **extra})

    def choice_chunk(choice: dict[str, Any], prompt: int, completion: int) -> str:
        """A chunk of one choice; with continuous usage, that choice's usage so far on it."""
        return chunk([choice], usage=_so_far(prompt, completion)) if continuous else chunk([choice])

    def build(gen: Generation, results: dict[str, dict]) -> dict[str, Any]:
        choices = []
        for s in sorted(gen.subs.values(), key=lambda s: s.index):
            r = results[s.rid]
            lps = fmt.chat_logprobs(st.tokenizer, st.token_bytes, r["logprobs"]) if logprobs is not None else None
            message, finish = output().message(r["text"], r["finish_reason"])
            choices.append({"index": s.index, "message": message,
                            "logprobs": lps, "finish_reason": finish, "stop_reason": r["stop_reason"]})
        first = results[min(gen.subs.values(), key=lambda s: s.index).rid]  # the choices share their prompt
        plps = fmt.prompt_logprobs(st.tokenizer, first["prompt_logprobs"] or []) if body.prompt_logprobs is not None \
            else None
        return {"id": rid, "object": "chat.completion", "created": created, "model": st.info.model_name,
                "choices": choices, "usage": _result_usage(gen, results), "prompt_logprobs": plps}

    async def events(gen: Generation) -> AsyncIterator[str]:
        token_chunk = fmt.TokenChunks({"id": rid, "object": "chat.completion.chunk", "created": created,
                                       "model": st.info.model_name}, chat=True)
        for s in sorted(gen.subs.values(), key=lambda s: s.index):
            yield choice_chunk({"index": s.index, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                "finish_reason": None}, len(s.token_ids), 0)
        finals: dict[str, Any] = {}
        outs = {rid: output() for rid in gen.subs} if parser is not None or tools is not None else {}
        async for s, o in gen.outputs():
            if o.error:
                yield fmt.sse(error_body(500, f"generation failed: {o.error}", None, "engine_error"))
                break
            if o.finished:
                finals[s.rid] = o
            lps = None
            if logprobs is not None and o.new_logprobs:
                lps = fmt.chat_logprobs(st.tokenizer, st.token_bytes, o.new_logprobs)
            reasoning, text, calls = outs[s.rid].feed(o.new_text, o.finished) if outs else ("", o.new_text, [])
            counts = (o.num_prompt_tokens, o.num_output_tokens)
            if lps:
                delta = {"reasoning_content": reasoning, "content": text} if reasoning else {"content": text}
                yield choice_chunk({"index": s.index, "delta": delta, "logprobs": lps, "finish_reason": None}, *counts)
            else:
                if reasoning:
                    yield choice_chunk({"index": s.index, "delta": {"reasoning_content": reasoning},
                                        "logprobs": None, "finish_reason": None}, *counts)
                if text and not continuous:
                    yield token_chunk(s.index, text)
                elif text:
                    yield choice_chunk({"index": s.index, "delta": {"content": text}, "logprobs": None,
                                        "finish_reason": None}, *counts)
            if calls:
                first = outs[s.rid].num_calls - len(calls)
                yield choice_chunk({"index": s.index, "delta": {"tool_calls": [
                    c.to_openai(first + k) for k, c in enumerate(calls)]}, "logprobs": None, "finish_reason": None},
                    *counts)
            if o.finished:
                finish = outs[s.rid].finish_reason(o.finish_reason) if outs else o.finish_reason
                yield choice_chunk({"index": s.index, "delta": {}, "logprobs": None, "finish_reason": finish,
                                    "stop_reason": o.stop_reason}, *counts)
        if include_usage:
            yield chunk([], usage=_count(gen, finals))
        yield fmt.DONE

    return await respond(request, gen, bool(body.stream), events, build)


def openai_router() -> APIRouter:
    """The OpenAI-compatible routes (a fresh router per app)."""
    router = APIRouter()
    router.add_api_route("/v1/completions", create_completion, methods=["POST"], responses=error_responses(),
                         response_model=CompletionResponse, summary="Create a text completion (OpenAI)")
    router.add_api_route("/v1/chat/completions", create_chat_completion, methods=["POST"], responses=error_responses(),
                         response_model=ChatCompletionResponse, summary="Create a chat completion (OpenAI)")
    return router
