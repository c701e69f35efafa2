"""Response pieces in OpenAI's shapes: usage (with cached prompt tokens), logprobs, SSE framing."""
from __future__ import annotations

import json
from json.encoder import encode_basestring
from typing import Any, Callable, Iterable, Optional

from tierlm.engine.outputs import TokenLogprob
from tierlm.server.requests import SubRequest

DONE = "data: [DONE]\n\n"


def sse(obj: dict[str, Any]) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False, separators=(',', ':'))}\n\n"


class TokenChunks:
    """The SSE event of a streamed token, `sse` of `{**head, "choices": [{"index", <key>: text, "logprobs":
    null, "finish_reason": null}]}` with `key` "text" (completions) or "delta" holding `{"content": text}`
    (chat), the same bytes: the fixed part is encoded once per response, only the text per token (the
    frontend formats an event per token of every stream that keeps up)."""

    def __init__(self, head: dict[str, Any], chat: bool) -> None:
        start = sse({**head, "choices": []})
        self._start = start[:start.rindex("[]")] + '[{"index":'
        self._key = ',"delta":{"content":' if chat else ',"text":'
        self._end = '},"logprobs":null,"finish_reason":null}]}\n\n' if chat else \
            ',"logprobs":null,"finish_reason":null}]}\n\n'

    def __call__(self, index: int, text: str) -> str:
        return f"{self._start}{index}{self._key}{encode_basestring(text)}{self._end}"


def usage(subs: Iterable[SubRequest], prompt_counts: dict[str, tuple[int, int]], output_counts: dict[str, int]
          ) -> dict[str, Any]:
    """Prompt tokens counted once per prompt (from its first choice), completion tokens over all choices.

    `prompt_counts[rid] = (prompt_tokens, cached_tokens)`, `output_counts[rid] = completion tokens`.
    """
    prompt = cached = 0
    seen: set[int] = set()
    completion = 0
    for s in subs:
        completion += output_counts.get(s.rid, 0)
        if s.prompt_index in seen:
            continue
        seen.add(s.prompt_index)
        p, c = prompt_counts.get(s.rid, (len(s.token_ids), 0))
        prompt += p or len(s.token_ids)
        cached += c
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached}}


def _tok(tokenizer: Any, token_id: int) -> str:
    return tokenizer.decode([token_id], skip_special_tokens=False)


def _legacy_logprobs(tokenizer: Any, entries: Iterable[tuple[int, Optional[TokenLogprob]]], offset: int
                     ) -> dict[str, Any]:
    """Legacy logprobs of (token id, its logprob or None) entries: tokens, token_logprobs, top_logprobs (null with
    no logprob), text_offset from `offset`."""
    tokens, token_lps, tops, offsets = [], [], [], []
    for token_id, lp in entries:
        s = _tok(tokenizer, token_id)
        tokens.append(s)
        token_lps.append(None if lp is None else lp.logprob)
        top: Optional[dict[str, float]] = None
        if lp is not None:
            top = {}
            for t, v in lp.top:
                top.setdefault(_tok(tokenizer, t), v)
        tops.append(top)
        offsets.append(offset)
        offset += len(s)
    return {"tokens": tokens, "token_logprobs": token_lps, "top_logprobs": tops, "text_offset": offsets}


def completion_logprobs(tokenizer: Any, lps: list[TokenLogprob], offset: int = 0) -> dict[str, Any]:
    """Legacy completions logprobs: tokens, token_logprobs, top_logprobs, text_offset. `top_logprobs` maps text
    to logprob, so alternatives whose texts are equal (byte tokens that each decode to U+FFFD) share one entry:
    the likeliest's, as the alternatives come most likely first."""
    return _legacy_logprobs(tokenizer, ((lp.token_id, lp) for lp in lps), offset)


def echo_logprobs(tokenizer: Any, prompt_ids: list[int], plps: list[Optional[TokenLogprob]]) -> dict[str, Any]:
    """The legacy logprobs of an echoed prompt (OpenAI's `echo` with `logprobs`): as `completion_logprobs`, with
    null for the first token, which nothing precedes."""
    return _legacy_logprobs(tokenizer, ((t, plps[k] if k < len(plps) else None) for k, t in enumerate(prompt_ids)),
                            0)


def joined_logprobs(first: dict[str, Any], then: dict[str, Any]) -> dict[str, Any]:
    """Two legacy logprobs dicts as one (`then`'s offsets already continue `first`'s)."""
    return {key: first[key] + then[key] for key in first}


def prompt_logprobs(tokenizer: Any, plps: list[Optional[TokenLogprob]]) -> list[Optional[dict[str, Any]]]:
    """vLLM's `prompt_logprobs`: per prompt token null (the first) or `{token id: {logprob, rank, decoded_token}}`
    for the token itself and its top alternatives (ranked 1..N)."""
    def entry(token_id: int, logprob: float, rank: Optional[int]) -> dict[str, Any]:
        text = _tok(tokenizer, token_id) if tokenizer is not None else None
        return {"logprob": logprob, "rank": rank, "decoded_token": text}

    out: list[Optional[dict[str, Any]]] = []
    for lp in plps:
        if lp is None:
            out.append(None)
            continue
        ranked = {str(lp.token_id): entry(lp.token_id, lp.logprob, lp.rank)}
        for r, (t, v) in enumerate(lp.top, start=1):
            ranked.setdefault(str(t), entry(t, v, r))
        out.append(ranked)
    return out


def chat_logprobs(tokenizer: Any, token_bytes: Callable[[int], bytes], lps: list[TokenLogprob]) -> dict[str, Any]:
    """Chat logprobs: `{"content": [{token, logprob, bytes, top_logprobs: [...]}, ...]}`; `bytes` are the
    token's own (`token_bytes`, see `server.token_bytes`), also where its text alone is not whole UTF-8."""
    def entry(token_id: int, logprob: float) -> dict[str, Any]:
        return {"token": _tok(tokenizer, token_id), "logprob": logprob, "bytes": list(token_bytes(token_id))}

    content = []
    for lp in lps:
        e = entry(lp.token_id, lp.logprob)
        e["top_logprobs"] = [entry(t, v) for t, v in lp.top]
        content.append(e)
    return {"content": content}

