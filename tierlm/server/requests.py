"""From API request to engine requests: model check, tokenization, chat template, limits, `SamplingParams`.

Everything here raises `APIError` with the offending field named, before anything reaches the engine.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Optional, Union

from tierlm.sampling_params import SamplingParams
from tierlm.server.errors import APIError
from tierlm.server.protocol import ChatCompletionRequest, CompletionRequest, SamplingFields

MAX_SUBREQUESTS = 256
MAX_STOPS = 16


@dataclass
class ServingInfo:
    """What request preparation needs about the served model (from the engine's READY message)."""

    model_name: str
    max_model_len: int
    vocab_size: int


@dataclass
class SubRequest:
    """One engine request of an HTTP request: prompt `prompt_index`, choice `index` (n > 1 fans out)."""

    rid: str
    index: int
    prompt_index: int
    token_ids: list[int]
    params: SamplingParams
    prompt_text: str = ""


def check_model(name: str, info: ServingInfo) -> None:
    if name != info.model_name:
        raise APIError(404, f"The model '{name}' does not exist; this server serves '{info.model_name}' "
                            f"(see /v1/models)", "model", "model_not_found")


def need_tokenizer(tokenizer: Any) -> None:
    if tokenizer is None:
        raise APIError(400, "the server runs with --skip-tokenizer-init: only /generate with input_ids is served",
                       None, "no_tokenizer")


def unsupported(req: SamplingFields) -> None:
    """Refuse OpenAI features TierLM does not implement, unless given at their neutral value."""
    checks: list[tuple[str, Any, Any]] = [
        ("presence_penalty", req.presence_penalty, 0), ("frequency_penalty", req.frequency_penalty, 0),
        ("logit_bias", req.logit_bias or None, None)]
    if isinstance(req, CompletionRequest):
        checks += [("echo", req.echo or False, False), ("suffix", req.suffix or None, None)]
        if req.best_of is not None and req.best_of != (req.n or 1):
            raise APIError(400, "best_of is not supported (only best_of == n)", "best_of", "unsupported")
    if isinstance(req, ChatCompletionRequest):
        checks += [("tools", req.tools or None, None)]
        if req.tool_choice not in (None, "none", "auto"):
            raise APIError(400, "tool_choice is not supported", "tool_choice", "unsupported")
        if req.response_format not in (None, {"type": "text"}):
            raise APIError(400, "response_format is not supported (only {\"type\": \"text\"})",
                           "response_format", "unsupported")
    for name, value, neutral in checks:
        if value is not None and value != neutral:
            raise APIError(400, f"{name} is not supported by TierLM", name, "unsupported")


def _stops(stop: Optional[Union[str, list[str]]]) -> list[str]:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > MAX_STOPS:
        raise APIError(400, f"stop: at most {MAX_STOPS} stop sequences, got {len(stops)}", "stop")
    if any(not s for s in stops):
        raise APIError(400, "stop: stop sequences must be non-empty strings", "stop")
    return stops


def sampling_params(req: SamplingFields, max_tokens: Optional[int], logprobs: Optional[int]) -> SamplingParams:
    """`SamplingParams` of one request (max_tokens resolved later against each prompt's length)."""
    if req.top_k == 0:
        raise APIError(400, "top_k must be -1 (off) or >= 1, got 0", "top_k")
    stop_ids = list(req.stop_token_ids or [])
    if any(t < 0 for t in stop_ids):
        raise APIError(400, "stop_token_ids must be non-negative token ids", "stop_token_ids")
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=1.0 if req.temperature is None else float(req.temperature),
        top_p=1.0 if req.top_p is None else float(req.top_p),
        top_k=-1 if req.top_k is None else req.top_k,
        min_p=0.0 if req.min_p is None else float(req.min_p),
        seed=req.seed, stop=_stops(req.stop), stop_token_ids=stop_ids,
        ignore_eos=bool(req.ignore_eos), logprobs=logprobs,
        skip_special_tokens=True if req.skip_special_tokens is None else req.skip_special_tokens)


def fit_to_context(ids: list[int], params: SamplingParams, info: ServingInfo, what: str = "prompt",
                   max_tokens_field: str = "max_tokens") -> SamplingParams:
    """413 for a prompt beyond the context; 400 when prompt + max_tokens does not fit; fills max_tokens=None."""
    n = len(ids)
    if n == 0:
        raise APIError(400, f"{what} must not be empty (it has 0 tokens)", what)
    if n >= info.max_model_len:
        raise APIError(413, f"{what} is {n} tokens long; this model's context is {info.max_model_len} tokens "
                            f"(prompt + completion must fit)", what, "context_length_exceeded")
    room = info.max_model_len - n
    if params.max_tokens is None:
        return replace(params, max_tokens=room)
    if params.max_tokens > room:
        raise APIError(400, f"{max_tokens_field}: {params.max_tokens} tokens requested but only {room} fit "
                            f"(context {info.max_model_len} - {what} {n} tokens)", max_tokens_field,
                       "context_length_exceeded")
    return params


def check_token_ids(ids: list[int], info: ServingInfo, field: str) -> None:
    bad = next((t for t in ids if not 0 <= t < info.vocab_size), None)
    if bad is not None:
        raise APIError(400, f"{field}: token id {bad} is outside the vocabulary [0, {info.vocab_size})", field)


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=True))


def completion_prompts(req: CompletionRequest, tokenizer: Any, info: ServingInfo) -> list[tuple[list[int], str]]:
    """(token ids, text) per prompt of a completions request."""
    p = req.prompt
    if isinstance(p, str):
        return [(_encode(tokenizer, p), p)]
    if not p:
        raise APIError(400, "prompt must not be empty", "prompt")
    if isinstance(p[0], str):
        return [(_encode(tokenizer, s), s) for s in p]  # type: ignore[arg-type]
    batches = [p] if isinstance(p[0], int) else p
    out = []
    for i, ids in enumerate(batches):
        check_token_ids(ids, info, "prompt" if batches is not p else f"prompt.{i}")  # type: ignore[arg-type]
        out.append((list(ids), ""))  # type: ignore[arg-type]
    return out


def chat_prompt(req: ChatCompletionRequest, tokenizer: Any) -> tuple[list[int], str]:
    """Render the messages through the model's chat template; (token ids, rendered text)."""
    if not getattr(tokenizer, "chat_template", None):
        raise APIError(400, "this model has no chat template; use /v1/completions", "messages", "no_chat_template")
    messages = []
    for i, m in enumerate(req.messages):
        content = m.content
        if content is None:
            if m.role != "assistant":
                raise APIError(400, f"messages.{i}.content is required for role '{m.role}'", f"messages.{i}.content")
            content = ""
        elif not isinstance(content, str):
            content = "".join(part.text for part in content)
        msg = {"role": m.role, "content": content}
        if m.name:
            msg["name"] = m.name
        messages.append(msg)
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False,
                                             add_generation_prompt=req.add_generation_prompt is not False)
    except Exception as e:  # noqa: BLE001  (templates raise their own errors for unsupported conversations)
        raise APIError(400, f"messages could not be rendered with the chat template: {e}", "messages") from None
    return list(tokenizer.encode(text, add_special_tokens=False)), text


def fan_out(base_id: str, prompts: list[tuple[list[int], str]], n: int, params: SamplingParams,
            info: ServingInfo, what: str = "prompt", max_tokens_field: str = "max_tokens") -> list[SubRequest]:
    """n engine requests per prompt; with a seed, choice i samples with seed + i so choices differ."""
    if len(prompts) * n > MAX_SUBREQUESTS:
        raise APIError(400, f"n: {len(prompts)} prompts x n={n} exceeds {MAX_SUBREQUESTS} choices per request", "n")
    subs = []
    for p_idx, (ids, text) in enumerate(prompts):
        label = what if len(prompts) == 1 else f"{what}.{p_idx}"
        fitted = fit_to_context(ids, params, info, label, max_tokens_field)
        for j in range(n):
            p = fitted if fitted.seed is None or j == 0 else replace(fitted, seed=(fitted.seed + j) % (2**63))
            subs.append(SubRequest(f"{base_id}-{p_idx}-{j}", p_idx * n + j, p_idx, ids, p, text))
    for s in subs:
        try:
            s.params.validate()
        except ValueError as e:
            raise APIError(400, str(e), str(e).split(" ")[0]) from None
    return subs
