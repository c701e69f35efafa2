"""Pydantic schemas of the HTTP API's requests: OpenAI completions/chat, the native `/generate`, /tokenize (the
answers: `responses`).

Requests are strict (no type coercion, no NaN/inf, unknown fields refused) so a client mistake is answered
with a 400 naming the field instead of being silently reinterpreted. OpenAI fields that TierLM does not
implement are accepted only at their neutral value (see `requests.unsupported`).
"""
from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from tierlm.server.tool_schema import NamedToolChoice, Tool, ToolCallIn
from tierlm.validation import MAX_REPETITION_PENALTY

MAX_INT = 2**31 - 1
MAX_SEED = 2**63 - 1
MIN_INT64 = -2**63



class StrictModel(BaseModel):
    """Base of every request schema: strict types, finite numbers, unknown fields refused."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class StreamOptions(StrictModel):
    """OpenAI `stream_options`: `include_usage` adds a final chunk carrying `usage`; with it, vLLM's
    `continuous_usage_stats` puts each chunk's choice's usage so far on every chunk too."""

    include_usage: Optional[bool] = False
    continuous_usage_stats: Optional[bool] = False


class SamplingFields(StrictModel):
    """Fields shared by completions and chat: OpenAI's sampling knobs plus TierLM extensions (via extra_body)."""

    model: str = Field(min_length=1, max_length=1024)
    max_tokens: Optional[int] = Field(None, ge=1)
    temperature: Optional[float] = Field(None, ge=0.0, le=2.0)
    top_p: Optional[float] = Field(None, gt=0.0, le=1.0)
    n: Optional[int] = Field(None, ge=1, le=64)
    stream: Optional[bool] = False
    stream_options: Optional[StreamOptions] = None
    stop: Optional[Union[str, list[str]]] = None
    seed: Optional[int] = Field(None, ge=0, le=MAX_SEED)
    presence_penalty: Optional[float] = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: Optional[float] = Field(None, ge=-2.0, le=2.0)
    logit_bias: Optional[dict[str, float]] = None
    user: Optional[str] = Field(None, max_length=1024)
    # TierLM extensions (vLLM-style names)
    top_k: Optional[int] = Field(None, ge=-1, le=MAX_INT)
    min_p: Optional[float] = Field(None, ge=0.0, le=1.0)
    repetition_penalty: Optional[float] = Field(None, gt=0.0, le=MAX_REPETITION_PENALTY)
    stop_token_ids: Optional[list[int]] = Field(None, max_length=64)
    ignore_eos: Optional[bool] = False
    min_tokens: Optional[int] = Field(None, ge=0, le=MAX_INT)
    include_stop_str_in_output: Optional[bool] = False
    skip_special_tokens: Optional[bool] = True
    prompt_logprobs: Optional[int] = Field(None, ge=0, le=20)  # vLLM's: each prompt token's logprob (no stream)
    # {"type": "text" | "json_object" | "json_schema", "json_schema": {"name", "schema", "strict"}} (completions too,
    # as vLLM)
    response_format: Optional[dict[str, Any]] = None
    regex: Optional[str] = None  # SGLang's: a regular expression the whole output matches
    guided_choice: Optional[list[str]] = Field(None, min_length=1, max_length=256)  # vLLM's: one of these texts
    ebnf: Optional[str] = None  # SGLang's: an EBNF grammar (root rule `root`) the whole output follows
    # vLLM's older spellings (a schema as an object or its text, a regex, an EBNF grammar) and its newer object
    # {"json" | "regex" | "choice" | "grammar" | "json_object": ...} (`server.structured`)
    guided_json: Optional[Union[str, dict[str, Any]]] = None
    guided_regex: Optional[str] = None
    guided_grammar: Optional[str] = None
    structured_outputs: Optional[dict[str, Any]] = None
    priority: Optional[int] = Field(None, ge=MIN_INT64, le=MAX_SEED)  # vLLM's: lower is admitted first
    # SGLang's extensions, which SGLang's router (sglang-router, smg) writes into every request it forwards:
    # no_stop_trim is SGLang's include_stop_str_in_output; return_hidden_states is refused by
    # `requests.unsupported` unless false.
    no_stop_trim: Optional[bool] = False
    return_hidden_states: Optional[bool] = False


class CompletionRequest(SamplingFields):
    """POST /v1/completions: a prompt as text, a batch of texts, token ids, or a batch of token-id lists."""

    prompt: Union[str, list[str], list[int], list[list[int]]]
    max_tokens: Optional[int] = Field(None, ge=0)  # 0 only with echo: the prompt (scored with logprobs), no output
    logprobs: Optional[int] = Field(None, ge=0, le=20)
    echo: Optional[bool] = False
    suffix: Optional[str] = None
    best_of: Optional[int] = Field(None, ge=1, le=64)


class TextPart(StrictModel):
    """One `{"type": "text", "text": ...}` part of a message's content list."""

    type: Literal["text"]
    text: str


class ChatMessage(StrictModel):
    """One chat message; content may be a string or a list of text parts. An assistant message may carry the
    `tool_calls` it made, a `tool` message answers one of them (`tool_call_id`)."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Optional[Union[str, list[TextPart]]] = None
    name: Optional[str] = Field(None, max_length=256)
    tool_calls: Optional[list[ToolCallIn]] = Field(None, max_length=128)
    tool_call_id: Optional[str] = Field(None, max_length=256)


class ChatCompletionRequest(SamplingFields):
    """POST /v1/chat/completions: messages rendered through the model's chat template."""

    messages: list[ChatMessage] = Field(min_length=1, max_length=4096)
    max_completion_tokens: Optional[int] = Field(None, ge=1)
    logprobs: Optional[bool] = False
    top_logprobs: Optional[int] = Field(None, ge=0, le=20)
    tools: Optional[list[Tool]] = Field(None, max_length=128)
    # None: "auto" when tools are given (OpenAI's default); "required" and a named function force calls, held to
    # their JSON schema (`chat_render.tool_parser_for`)
    tool_choice: Optional[Union[Literal["none", "auto", "required"], NamedToolChoice]] = None
    parallel_tool_calls: Optional[bool] = None
    add_generation_prompt: Optional[bool] = True
    continue_final_message: Optional[bool] = False
    # vLLM's and SGLang's: extra variables for the chat template (Qwen3's {"enable_thinking": false})
    chat_template_kwargs: Optional[dict[str, Any]] = Field(None, max_length=32)
    # SGLang's: with --reasoning-parser, split the reasoning from the answer (separate_reasoning), and stream it
    # as it comes (stream_reasoning) or in one piece once it is over
    separate_reasoning: Optional[bool] = True
    stream_reasoning: Optional[bool] = True


class NativeSamplingParams(StrictModel):
    """`sampling_params` of the native `/generate`: the fields of `tierlm.SamplingParams`."""

    max_tokens: Optional[int] = Field(16, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=100.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(-1, ge=-1, le=MAX_INT)
    min_p: float = Field(0.0, ge=0.0, le=1.0)
    repetition_penalty: float = Field(1.0, gt=0.0, le=MAX_REPETITION_PENALTY)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    logit_bias: Optional[dict[str, float]] = None  # OpenAI's: token id (as a string) -> bias in [-100, 100]
    seed: Optional[int] = Field(None, ge=0, le=MAX_SEED)
    stop: list[str] = Field(default_factory=list, max_length=16)
    stop_token_ids: list[int] = Field(default_factory=list, max_length=64)
    ignore_eos: bool = False
    min_tokens: int = Field(0, ge=0, le=MAX_INT)
    include_stop_str_in_output: bool = False
    logprobs: Optional[int] = Field(None, ge=0, le=20)
    prompt_logprobs: Optional[int] = Field(None, ge=0, le=20)
    json_schema: Optional[str] = None  # SGLang's: a JSON schema as text that the output follows
    regex: Optional[str] = None  # SGLang's: a regular expression the whole output matches
    ebnf: Optional[str] = None  # SGLang's: an EBNF grammar (root rule `root`) the whole output follows
    skip_special_tokens: bool = True
    priority: int = Field(0, ge=MIN_INT64, le=MAX_SEED)
    # SGLang's spellings of max_tokens (0: the prompt scored alone), min_tokens, include_stop_str_in_output, seed
    max_new_tokens: Optional[int] = Field(None, ge=0)
    min_new_tokens: Optional[int] = Field(None, ge=0, le=MAX_INT)
    no_stop_trim: Optional[bool] = None
    sampling_seed: Optional[int] = Field(None, ge=0, le=MAX_SEED)


class GenerateRequest(StrictModel):
    """POST /generate: exactly one of `input_ids` (token ids) or `text`; replies with text and token ids, and
    SGLang's `meta_info`. SGLang's logprob fields: `return_logprob` (the output tokens' logprobs, and the prompt's
    from `logprob_start_len` when that is 0 or more), `top_logprobs_num` alternatives each."""

    input_ids: Optional[list[int]] = Field(None, max_length=1_000_000)
    text: Optional[str] = None
    sampling_params: NativeSamplingParams = Field(default_factory=NativeSamplingParams)
    stream: bool = False
    rid: Optional[str] = Field(None, max_length=256)
    return_logprob: bool = False
    logprob_start_len: int = Field(-1, ge=-1)
    top_logprobs_num: int = Field(0, ge=0, le=20)
    return_text_in_logprobs: bool = False
    # what SGLang's router writes into every /generate it forwards: a model name (taken and ignored, as SGLang's
    # /generate does), and SGLang's switches at their defaults (log_metrics and no_logs taken and ignored: no
    # request text is logged; the others refused when on)
    model: Optional[str] = Field(None, max_length=1024)
    log_metrics: bool = True
    no_logs: bool = False
    return_hidden_states: bool = False
    background: bool = False
    return_bytes: bool = False
    return_entropy: bool = False


class TokenizeRequest(StrictModel):
    """POST /tokenize (vLLM's): exactly one of a `prompt`'s text or chat `messages` (rendered through the chat
    template as /v1/chat/completions renders them). `add_special_tokens` defaults to True for a prompt, False
    for messages (the template writes its own)."""

    model: Optional[str] = None
    prompt: Optional[str] = None
    messages: Optional[list[ChatMessage]] = Field(None, min_length=1, max_length=4096)
    tools: Optional[list[Tool]] = Field(None, max_length=128)  # rendered as a chat request's are
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    chat_template_kwargs: Optional[dict[str, Any]] = Field(None, max_length=32)
    add_special_tokens: Optional[bool] = None
    return_token_strs: bool = False


class DetokenizeRequest(StrictModel):
    """POST /detokenize (vLLM's): token ids back to text (special tokens kept)."""

    model: Optional[str] = None
    tokens: list[int] = Field(max_length=1_000_000)
