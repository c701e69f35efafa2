"""vLLM's `/tokenize` and `/detokenize`: what a client asks to count a prompt's tokens against the context, or to
read ids back as text, with this server's own tokenizer and chat template. The same guards as generation: text
that cannot fit the context is refused (413) before it is tokenized, and tokenizing runs off the event loop."""
from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request

from tierlm.server.chat_render import chat_text
from tierlm.server.errors import APIError
from tierlm.server.protocol import DetokenizeRequest, TokenizeRequest
from tierlm.server.responses import DetokenizeResponse, TokenizeResponse, error_responses
from tierlm.server.requests import check_model, need_tokenizer
from tierlm.server.state import get_state
from tierlm.validation import check_token_ids


async def tokenize(body: TokenizeRequest, request: Request) -> dict[str, Any]:
    st = get_state(request)
    if body.model is not None:
        check_model(body.model, st.info)
    encoder = need_tokenizer(st.encoder)
    if (body.prompt is None) == (body.messages is None):
        raise APIError(400, "give exactly one of prompt or messages", "prompt")
    if body.tools and body.messages is None:
        raise APIError(400, "tools are rendered with messages, not with a prompt", "tools")
    if body.messages is not None:
        text, param, special = await chat_text(body, encoder), "messages", False
    else:
        text, param, special = body.prompt or "", "prompt", True
    special = special if body.add_special_tokens is None else body.add_special_tokens
    ids = await encoder.encode(text, param, add_special_tokens=special)
    strs = list(st.tokenizer.convert_ids_to_tokens(ids)) if body.return_token_strs else None
    return {"count": len(ids), "max_model_len": st.info.max_model_len, "tokens": ids, "token_strs": strs}


async def detokenize(body: DetokenizeRequest, request: Request) -> dict[str, Any]:
    st = get_state(request)
    if body.model is not None:
        check_model(body.model, st.info)
    need_tokenizer(st.encoder)
    check_token_ids(body.tokens, st.info.vocab_size, "tokens")
    text = await asyncio.to_thread(st.tokenizer.decode, body.tokens)
    return {"prompt": text}


def tokenize_router() -> APIRouter:
    """The tokenizer routes (a fresh router per app)."""
    router = APIRouter()
    router.add_api_route("/tokenize", tokenize, methods=["POST"], responses=error_responses(),
                         response_model=TokenizeResponse, summary="A prompt's or a conversation's token ids (vLLM's)")
    router.add_api_route("/detokenize", detokenize, methods=["POST"], responses=error_responses(),
                         response_model=DetokenizeResponse, summary="Token ids back to text (vLLM's)")
    return router
