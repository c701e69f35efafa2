"""The one request validator: what makes a prompt and its `SamplingParams` runnable.

Both processes call it: the HTTP frontend while preparing a request (so a mistake is answered before anything
reaches the engine) and `Engine.add_request` (so offline users and anything that bypasses the frontend get
the same checks). Every failure is a `RequestError` (or a subclass) naming the field at fault; the server
answers it with the error's own `http_status`. HTTP-only policy (how many stop strings or choices a request
may carry, OpenAI fields TierLM does not implement) stays in the server.

Imports nothing from `engine` or `server`.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional, Sequence

from tierlm.errors import PromptTooLongError, RequestError

if TYPE_CHECKING:
    from tierlm.sampling_params import SamplingParams

# Token ids travel between the processes as msgpack integers: keep them within a signed 64-bit range even
# when the vocabulary size is not known to the caller.
MAX_TOKEN_ID = 2**63 - 1
# a repetition penalty past this scales a seen token's logit far beyond any other's: as good as a ban
MAX_REPETITION_PENALTY = 100.0
MAX_LOGIT_BIAS = 100.0  # OpenAI's range of a logit bias: [-100, 100]
# tokens one request may bias: each step uploads them again, so the host work per step stays bounded
MAX_BIASED_TOKENS = 4096
MAX_SCHEMA_CHARS = 1 << 20  # a JSON schema's, regex's or grammar's text
# JSON nesting of a schema: its conversion to a grammar (on the engine's step thread) grows faster than linearly with
# depth; real schemas stay far below this
MAX_SCHEMA_DEPTH = 128


def check_text(text: str, param: str) -> None:
    """Text must be encodable as UTF-8: refuse lone surrogates (JSON allows them as "\\ud800" escapes)."""
    if text.isascii():  # O(1) in CPython: the common case costs nothing
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise RequestError(f"{param}: invalid Unicode: lone surrogate \\u{ord(text[e.start]):04x} at character "
                           f"{e.start}", param) from None


def is_int(value: object) -> bool:
    """An integer, not a bool (JSON's true would otherwise pass as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """A finite int or float, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_token_ids(ids: Sequence[object], vocab_size: Optional[int], param: str) -> None:
    """Every id an integer in [0, vocab_size) (or within 64 bits when the vocabulary is not known)."""
    upper = MAX_TOKEN_ID + 1 if vocab_size is None else vocab_size
    # every request's prompt passes here before it is queued: check at C speed (types, then the range),
    # and scan one id at a time only to name the bad one
    if not ids or (set(map(type, ids)) == {int} and 0 <= min(ids) and max(ids) < upper):  # type: ignore[type-var]
        return
    for bad in ids:  # (None too: it is not an id)
        if not is_int(bad) or not 0 <= bad < upper:  # type: ignore[operator]
            raise RequestError(f"{param}: token ids must be integers in [0, {upper}), got {bad!r}", param)


def check_sampling(params: "SamplingParams", vocab_size: Optional[int] = None) -> None:
    """Raise RequestError naming the first invalid field of `params` (normalizes a lone `stop` string)."""
    def bad(name: str, why: str) -> None:
        raise RequestError(f"{name} {why}", name)

    if params.max_tokens is not None and (not is_int(params.max_tokens) or params.max_tokens <= 0):
        bad("max_tokens", f"must be a positive integer, got {params.max_tokens!r}")
    if not is_int(params.min_tokens) or params.min_tokens < 0:
        bad("min_tokens", f"must be an integer >= 0, got {params.min_tokens!r}")
    if params.max_tokens is not None and params.min_tokens > params.max_tokens:
        bad("min_tokens", f"must be <= max_tokens ({params.max_tokens}), got {params.min_tokens}")
    if not is_number(params.temperature) or params.temperature < 0:
        bad("temperature", f"must be >= 0, got {params.temperature!r}")
    if not is_number(params.top_p) or not 0.0 < params.top_p <= 1.0:
        bad("top_p", f"must be in (0, 1], got {params.top_p!r}")
    if not is_int(params.top_k) or params.top_k < -1:  # 0 and -1 both mean off (vLLM's and transformers' 0)
        bad("top_k", f"must be -1 or 0 (off) or >= 1, got {params.top_k!r}")
    if not is_number(params.min_p) or not 0.0 <= params.min_p <= 1.0:
        bad("min_p", f"must be in [0, 1], got {params.min_p!r}")
    if not is_number(params.repetition_penalty) or not 0.0 < params.repetition_penalty <= MAX_REPETITION_PENALTY:
        bad("repetition_penalty", f"must be in (0, {MAX_REPETITION_PENALTY:g}], got {params.repetition_penalty!r}")
    for name in ("presence_penalty", "frequency_penalty"):
        value = getattr(params, name)
        if not is_number(value) or not -2.0 <= value <= 2.0:
            bad(name, f"must be in [-2, 2], got {value!r}")
    if params.logit_bias is not None:
        check_logit_bias(params.logit_bias, vocab_size)
    if params.logprobs is not None and (not is_int(params.logprobs) or not 0 <= params.logprobs <= 20):
        bad("logprobs", f"must be in [0, 20], got {params.logprobs!r}")
    if params.json_schema is not None:
        check_json_schema(params.json_schema)
    grammars = [name for name in ("json_schema", "regex", "ebnf") if getattr(params, name) is not None]
    for name, what in (("regex", "regular expression"), ("ebnf", "EBNF grammar")):
        value = getattr(params, name)
        if value is None:
            continue
        if not isinstance(value, str) or not value or len(value) > MAX_SCHEMA_CHARS:
            bad(name, f"must be a non-empty {what} of at most {MAX_SCHEMA_CHARS} characters")
        check_text(value, name)
    if len(grammars) > 1:
        bad(grammars[1], f"give {grammars[0]} or {grammars[1]}, not both")
    if params.min_tokens and grammars:
        # the grammar may be complete sooner, and then allows only end of sequence
        bad("min_tokens", "cannot be combined with json_schema, regex or ebnf (the grammar decides where the output "
                          "ends)")
    if params.prompt_logprobs is not None and (not is_int(params.prompt_logprobs)
                                               or not 0 <= params.prompt_logprobs <= 20):
        bad("prompt_logprobs", f"must be in [0, 20], got {params.prompt_logprobs!r}")
    if params.seed is not None and (not is_int(params.seed) or not -2**63 <= params.seed < 2**64):
        bad("seed", f"must be a 64-bit integer, got {params.seed!r}")
    if not is_int(params.priority) or not -2**63 <= params.priority < 2**63:
        bad("priority", f"must be a 64-bit integer, got {params.priority!r}")
    if isinstance(params.stop, str):
        params.stop = [params.stop]
    if any(not isinstance(s, str) or not s for s in params.stop):
        bad("stop", "must be a list of non-empty strings")
    for s in params.stop:
        check_text(s, "stop")
    if params.stop and not params.detokenize:
        bad("stop", "strings need detokenize=True")
    check_token_ids(params.stop_token_ids, vocab_size, "stop_token_ids")


def check_json_schema(schema: object, param: str = "json_schema") -> None:
    """A JSON schema given as text: a string of at most MAX_SCHEMA_CHARS holding a JSON object (its content is
    checked where the grammar is compiled)."""
    import json

    if not isinstance(schema, str) or len(schema) > MAX_SCHEMA_CHARS:
        raise RequestError(f"{param} must be a JSON schema as text of at most {MAX_SCHEMA_CHARS} characters", param)
    check_text(schema, param)
    try:
        doc = json.loads(schema)
        too_deep = _depth(doc) > MAX_SCHEMA_DEPTH
    except ValueError as e:
        raise RequestError(f"{param} is not JSON: {e}", param) from None
    except RecursionError:
        too_deep = True
    if too_deep:
        raise RequestError(f"{param} is nested more than {MAX_SCHEMA_DEPTH} levels deep", param)
    if not isinstance(doc, dict):
        raise RequestError(f"{param} must be a JSON object (a schema), got {type(doc).__name__}", param)


def _depth(doc: object) -> int:
    """The JSON nesting depth of `doc` (a scalar is 0), walked without recursion; stops counting past the limit."""
    deepest, stack = 0, [(doc, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_SCHEMA_DEPTH:
                return deepest
            stack.extend((child, depth) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def check_logit_bias(bias: object, vocab_size: Optional[int], param: str = "logit_bias") -> None:
    """A map of at most `MAX_BIASED_TOKENS` token ids (in the vocabulary) to finite biases in [-100, 100]."""
    if not isinstance(bias, dict):
        raise RequestError(f"{param} must map token ids to biases, got {type(bias).__name__}", param)
    if len(bias) > MAX_BIASED_TOKENS:
        raise RequestError(f"{param}: at most {MAX_BIASED_TOKENS} tokens, got {len(bias)}", param)
    check_token_ids(list(bias), vocab_size, param)
    for token, value in bias.items():
        if not is_number(value) or not -MAX_LOGIT_BIAS <= value <= MAX_LOGIT_BIAS:
            raise RequestError(f"{param}: the bias of token {token} must be in [-{MAX_LOGIT_BIAS:g}, "
                               f"{MAX_LOGIT_BIAS:g}], got {value!r}", param)


def check_prompt_ids(ids: Sequence[object], vocab_size: Optional[int], max_model_len: int,
                     param: str = "prompt") -> None:
    """A non-empty prompt of valid token ids that leaves room for at least one output token."""
    n = len(ids)
    if n == 0:
        raise RequestError(f"{param} is empty (0 tokens)", param)
    check_token_ids(ids, vocab_size, param)
    if n >= max_model_len:
        raise prompt_too_long(n, max_model_len, param)


def prompt_too_long(num_tokens: int, max_model_len: int, param: str = "prompt") -> PromptTooLongError:
    return PromptTooLongError(f"{param} has {num_tokens} tokens; the context limit is {max_model_len} tokens "
                              f"(prompt + at least 1 output token)", param)
