"""Pydantic schemas of the HTTP API's answers: OpenAI completions and chat (whole and their usage), the error body,
/v1/models, the native /generate, /tokenize and /detokenize. Requests are in `protocol`."""
from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, Field

from tierlm.server.tool_schema import ToolCallOut


class ErrorDetail(BaseModel):
    """OpenAI error object: `message` says what is wrong, `param` names the offending field."""

    message: str
    type: str
    param: Optional[str] = None
    code: Optional[str] = None


class ErrorResponse(BaseModel):
    """Body of every 4xx/5xx answer: `{"error": {...}}` as the OpenAI API sends it."""

    error: ErrorDetail


def error_responses() -> dict[Union[int, str], dict[str, Any]]:
    """OpenAPI `responses` of a generation route: every error status it can answer, with its body schema."""
    return {code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 500, 503)}


class PromptTokensDetails(BaseModel):
    """How many prompt tokens were served from the prefix cache."""

    cached_tokens: int = 0


class Usage(BaseModel):
    """Token accounting of one response."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails


class CompletionChoice(BaseModel):
    """One generated text of /v1/completions."""

    index: int
    text: str
    logprobs: Optional[dict[str, Any]] = None
    finish_reason: Optional[str] = None
    stop_reason: Union[int, str, None] = None  # vLLM's: the stop string or stop token id that ended it
    prompt_logprobs: Optional[list[Optional[dict[str, Any]]]] = None  # vLLM's, when asked


class CompletionResponse(BaseModel):
    """Non-streaming /v1/completions answer."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class ChatMessageOut(BaseModel):
    """The assistant message of a chat choice."""

    role: Literal["assistant"] = "assistant"
    content: Optional[str] = None  # null when the answer is only tool calls
    reasoning_content: Optional[str] = None  # with --reasoning-parser: the model's reasoning, apart
    tool_calls: list[ToolCallOut] = Field(default_factory=list)  # the calls taken out of the answer


class ChatChoice(BaseModel):
    """One generated message of /v1/chat/completions."""

    index: int
    message: ChatMessageOut
    logprobs: Optional[dict[str, Any]] = None
    finish_reason: Optional[str] = None
    stop_reason: Union[int, str, None] = None


class ChatCompletionResponse(BaseModel):
    """Non-streaming /v1/chat/completions answer."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    prompt_logprobs: Optional[list[Optional[dict[str, Any]]]] = None  # vLLM's, when asked


class ModelCard(BaseModel):
    """One entry of /v1/models."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "tierlm"
    root: Optional[str] = None  # the model's directory or hub id, as vLLM reports it
    parent: Optional[str] = None
    max_model_len: int


class ModelList(BaseModel):
    """/v1/models answer."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


class GenerateResponse(BaseModel):
    """Non-streaming /generate answer."""

    text: str
    output_ids: list[int]
    finish_reason: Optional[str]
    stop_reason: Union[int, str, None] = None
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    logprobs: Optional[list[dict[str, Any]]] = None
    prompt_logprobs: Optional[list[Optional[dict[str, Any]]]] = None
    meta_info: dict[str, Any]  # SGLang's: id, finish_reason {type, matched | length | message}, counts, logprobs


class TokenizeResponse(BaseModel):
    """/tokenize's answer: the ids, their count, the context they must fit, and each id's vocabulary string when
    asked."""

    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: Optional[list[str]] = None


class DetokenizeResponse(BaseModel):
    """/detokenize's answer."""

    prompt: str
