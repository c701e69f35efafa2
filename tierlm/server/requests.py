"""From API request to engine requests: model check, tokenization, limits, `SamplingParams` (the chat
template: `chat_render`).

Everything here raises a `RequestError` (`APIError` for HTTP-only policy) with the offending field named,
before anything reaches the engine. What makes a request runnable is checked by `tierlm.validation`, the
validator the engine runs too; tokenization goes through `PromptEncoder`, off the event loop.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Optional, Union

from tierlm.errors import RequestError
from tierlm.sampling_params import SamplingParams
from tierlm.server.errors import APIError
from tierlm.server.prompt_encoder import PromptEncoder
from tierlm.server.protocol import CompletionRequest, SamplingFields
from tierlm.server.structured import grammar_fields
from tierlm.validation import check_prompt_ids, check_text

MAX_SUBREQUESTS = 256
MAX_STOPS = 16


@dataclass
class ServingInfo:
    """What request preparation needs about the served model (from the engine's READY message)."""

    model_name: str
    max_model_len: int
    vocab_size: int
    sampling_defaults: dict[str, float] = field(default_factory=dict)  # the model's, for fields a request leaves unset


@dataclass
class SubRequest:
    """One engine request of an HTTP request: prompt `prompt_index`, choice `index` (n > 1 fans out)."""

    rid: str
    index: int
    prompt_index: int
    token_ids: list[int]
    params: SamplingParams
    prompt_text: str = ""


def max_body_bytes(info: ServingInfo, max_token_chars: int) -> int:
    """No request this model can serve has a larger body: MAX_SUBREQUESTS prompts of max_model_len tokens,
    each token at most `max_token_chars` characters of at most 12 bytes of JSON ("\\ud83d\\ude00") or an id
    of at most 24, plus 1 MiB for the other fields. Small contexts thus get a small cap."""
    return MAX_SUBREQUESTS * info.max_model_len * max(12 * max_token_chars, 24) + 2**20


def check_model(name: str, info: ServingInfo) -> None:
    if name != info.model_name:
        raise APIError(404, f"The model {name!r} does not exist; this server serves {info.model_name!r} "
                            f"(see /v1/models)", "model", "model_not_found")


def need_tokenizer(encoder: Optional[PromptEncoder], param: Optional[str] = None) -> PromptEncoder:
    if encoder is None:
        raise APIError(400, "the server runs with --skip-tokenizer-init: send prompts as token ids (to "
                            "/v1/completions or /generate); text and chat are not served", param, "no_tokenizer")
    return encoder


def unsupported(req: SamplingFields) -> None:
    """Refuse OpenAI features TierLM does not implement, unless given at their neutral value."""
    checks: list[tuple[str, Any, Any]] = [("return_hidden_states", req.return_hidden_states, False)]
    if req.prompt_logprobs is not None and req.stream:  # as vLLM
        raise APIError(400, "prompt_logprobs are not returned in streams; send stream: false", "prompt_logprobs")
    if isinstance(req, CompletionRequest):
        checks += [("suffix", req.suffix or None, None)]
        if req.best_of is not None and req.best_of != (req.n or 1):
            raise APIError(400, "best_of is not supported (only best_of == n)", "best_of", "unsupported")
    for name, value, neutral in checks:
        if value is not None and value != neutral:
            raise APIError(400, f"{name} is not supported by TierLM", name, "unsupported")


def logit_bias(bias: Optional[dict[str, float]], param: str = "logit_bias") -> Optional[dict[int, float]]:
    """OpenAI's `logit_bias` (JSON keys are strings: token ids written in decimal) with integer keys; None when
    absent or empty. Ranges are checked with the other sampling fields (`validation.check_logit_bias`)."""
    if not bias:
        return None
    out = {}
    for key, value in bias.items():
        if not (key.isascii() and key.isdigit()) or len(key) > 19:
            raise APIError(400, f"{param}: keys must be token ids written as decimal integers, got {key!r}", param)
        out[int(key)] = value
    return out


def _stops(stop: Optional[Union[str, list[str]]]) -> list[str]:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > MAX_STOPS:
        raise APIError(400, f"stop: at most {MAX_STOPS} stop sequences, got {len(stops)}", "stop")
    return stops


def validated(params: SamplingParams, info: ServingInfo, prefix: str = "") -> SamplingParams:
    """`params` checked by the shared validator; `prefix` qualifies the field it names (`sampling_params.`)."""
    try:
        params.validate(info.vocab_size)
    except RequestError as e:
        if prefix and e.param:
            e.param = prefix + e.param
        raise
    return params


def sampling_params(req: SamplingFields, max_tokens: Optional[int], logprobs: Optional[int],
                    info: ServingInfo, detokenize: bool = True, prompt_logprobs: Optional[int] = None
                    ) -> SamplingParams:
    """`SamplingParams` of one request (max_tokens resolved later against each prompt's length)."""
    def pick(name: str, value: Any) -> Any:  # the request's value, else the model's, else SamplingParams' default
        return value if value is not None else info.sampling_defaults.get(name, getattr(SamplingParams, name))

    return validated(SamplingParams(
        max_tokens=max_tokens,
        temperature=float(pick("temperature", req.temperature)),
        top_p=float(pick("top_p", req.top_p)),
        top_k=int(pick("top_k", req.top_k)),
        min_p=float(pick("min_p", req.min_p)),
        repetition_penalty=float(pick("repetition_penalty", req.repetition_penalty)),
        presence_penalty=float(pick("presence_penalty", req.presence_penalty)),
        frequency_penalty=float(pick("frequency_penalty", req.frequency_penalty)),
        logit_bias=logit_bias(req.logit_bias),
        seed=req.seed, stop=_stops(req.stop), stop_token_ids=list(req.stop_token_ids or []),
        ignore_eos=bool(req.ignore_eos), logprobs=logprobs, priority=req.priority or 0,
        prompt_logprobs=prompt_logprobs if prompt_logprobs is not None else req.prompt_logprobs,
        **grammar_fields(req),
        min_tokens=req.min_tokens or 0,
        include_stop_str_in_output=bool(req.include_stop_str_in_output or req.no_stop_trim),
        skip_special_tokens=True if req.skip_special_tokens is None else req.skip_special_tokens,
        detokenize=detokenize), info)


def fit_to_context(ids: list[int], params: SamplingParams, info: ServingInfo, what: str = "prompt",
                   max_tokens_field: str = "max_tokens") -> SamplingParams:
    """400 for an empty prompt or bad token ids, 413 for one beyond the context, 400 when prompt + max_tokens
    does not fit; fills max_tokens=None with the room left."""
    check_prompt_ids(ids, info.vocab_size, info.max_model_len, what)
    n = len(ids)
    room = info.max_model_len - n
    if params.max_tokens is None:
        return replace(params, max_tokens=room)
    if params.max_tokens > room:
        raise APIError(400, f"{max_tokens_field}: {params.max_tokens} tokens requested but only {room} fit "
                            f"(context {info.max_model_len} - {what} {n} tokens)", max_tokens_field,
                       "context_length_exceeded")
    return params


async def completion_prompts(req: CompletionRequest, encoder: Optional[PromptEncoder]
                             ) -> list[tuple[list[int], str]]:
    """(token ids, text) per prompt of a completions request (token-id prompts are checked in `fan_out`;
    they need no tokenizer)."""
    p = req.prompt
    if isinstance(p, str):
        return [(await need_tokenizer(encoder, "prompt").encode(p, "prompt"), p)]
    if not p:
        raise APIError(400, "prompt must not be empty", "prompt")
    check_choices(len(p) if not isinstance(p[0], int) else 1, req.n or 1)
    if isinstance(p[0], str):
        encoder = need_tokenizer(encoder, "prompt")
        texts: list[str] = p  # type: ignore[assignment]
        for i, text in enumerate(texts):  # refuse an over-long or invalid prompt before tokenizing any
            encoder.check_length(len(text), f"prompt.{i}")
            check_text(text, f"prompt.{i}")
        return [(await encoder.encode(text, f"prompt.{i}"), text) for i, text in enumerate(texts)]
    batches = [p] if isinstance(p[0], int) else p
    return [(list(ids), "") for ids in batches]  # type: ignore[arg-type]


def check_choices(num_prompts: int, n: int) -> None:
    if num_prompts * n > MAX_SUBREQUESTS:
        raise APIError(400, f"n: {num_prompts} prompts x n={n} exceeds {MAX_SUBREQUESTS} choices per request", "n")


def fan_out(base_id: str, prompts: list[tuple[list[int], str]], n: int, params: SamplingParams,
            info: ServingInfo, what: str = "prompt", max_tokens_field: str = "max_tokens") -> list[SubRequest]:
    """n engine requests per prompt; with a seed, choice i samples with seed + i so choices differ."""
    check_choices(len(prompts), n)
    subs = []
    for p_idx, (ids, text) in enumerate(prompts):
        label = what if len(prompts) == 1 else f"{what}.{p_idx}"
        fitted = fit_to_context(ids, params, info, label, max_tokens_field)
        for j in range(n):
            p = fitted if fitted.seed is None or j == 0 else replace(fitted, seed=(fitted.seed + j) % (2**63))
            subs.append(SubRequest(f"{base_id}-{p_idx}-{j}", p_idx * n + j, p_idx, ids, p, text))
    return subs
