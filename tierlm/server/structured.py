"""What holds a request's whole output to a grammar, in every spelling served: OpenAI's `response_format`,
SGLang's `regex` and `ebnf`, vLLM's `guided_choice`, `guided_json`, `guided_regex`, `guided_grammar` and its newer
`structured_outputs` ({"json" | "regex" | "choice" | "grammar" | "json_object"}). Each becomes one of
`SamplingParams.json_schema`, `regex` or `ebnf` (`engine.guided`); two at once are a 400 naming the second."""
from __future__ import annotations

import json
from typing import Any, Optional

from tierlm.server.errors import APIError
from tierlm.server.protocol import SamplingFields
from tierlm.validation import check_json_schema, check_text

REGEX_SPECIAL = frozenset("\\.^$*+?{}[]|()/-")  # escaped when a choice becomes a regex
ANY_OBJECT = '{"type": "object"}'
STRUCTURED_KEYS = ("json", "regex", "choice", "grammar", "json_object")  # vLLM's structured_outputs


def json_text(value: Any, param: str) -> str:
    """`value` as JSON text; a 400 for NaN or infinity inside it (JSON has neither; the request parser lets them into
    free-form objects)."""
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except ValueError:
        raise APIError(400, f"{param}: NaN and infinity are not JSON numbers", param) from None


def json_schema_of(fmt: Optional[dict[str, Any]]) -> Optional[str]:
    """OpenAI's `response_format` as the JSON schema text the engine follows (`SamplingParams.json_schema`), or None
    for plain text."""
    kind = None if fmt is None else fmt.get("type")
    if fmt is None or (kind == "text" and len(fmt) == 1):
        return None
    if kind == "json_object" and len(fmt) == 1:
        return ANY_OBJECT
    if kind == "json_schema" and set(fmt) == {"type", "json_schema"}:
        spec = fmt["json_schema"]
        if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict) or \
                not set(spec) <= {"name", "description", "schema", "strict"}:
            raise APIError(400, "response_format.json_schema: an object with a JSON schema object as `schema` (and "
                                "optionally name, description, strict)", "response_format.json_schema")
        return schema_text(spec["schema"], "response_format.json_schema.schema")
    raise APIError(400, "response_format: {\"type\": \"text\"}, {\"type\": \"json_object\"} or {\"type\": "
                        "\"json_schema\", \"json_schema\": {...}}", "response_format")


def schema_text(schema: Any, param: str) -> str:
    """A JSON schema given as an object or as its text, as checked text."""
    text = schema if isinstance(schema, str) else json_text(schema, param)
    check_json_schema(text, param)
    return text


def choice_regex(choices: Any, param: str) -> str:
    """A regular expression matching exactly one of `choices` (non-empty texts)."""
    if not isinstance(choices, list) or not choices or len(choices) > 256:
        raise APIError(400, f"{param}: a list of 1 to 256 texts", param)
    for i, text in enumerate(choices):
        if not isinstance(text, str) or not text:
            raise APIError(400, f"{param}.{i}: a choice must be a non-empty text", f"{param}.{i}")
        check_text(text, f"{param}.{i}")
    return "(" + "|".join("".join("\\" + c if c in REGEX_SPECIAL else c for c in t) for t in choices) + ")"


def _text(value: Any, param: str) -> str:
    if not isinstance(value, str) or not value:
        raise APIError(400, f"{param}: a non-empty text", param)
    return value


def _structured_outputs(spec: Any) -> list[tuple[str, str, str]]:
    """vLLM's `structured_outputs` object as (param, kind, value) entries."""
    if not isinstance(spec, dict) or not set(spec) <= set(STRUCTURED_KEYS):
        raise APIError(400, "structured_outputs: an object with one of " + ", ".join(STRUCTURED_KEYS),
                       "structured_outputs")
    out = []
    for key, value in spec.items():
        param = f"structured_outputs.{key}"
        if value is None or (key == "json_object" and value is False):
            continue
        if key == "json_object":
            if value is not True:
                raise APIError(400, f"{param}: true or false", param)
            out.append((param, "json_schema", ANY_OBJECT))
        elif key == "json":
            out.append((param, "json_schema", schema_text(value, param)))
        elif key == "choice":
            out.append((param, "regex", choice_regex(value, param)))
        else:
            out.append((param, "regex" if key == "regex" else "ebnf", _text(value, param)))
    return out


def grammar_fields(req: SamplingFields) -> dict[str, Optional[str]]:
    """`json_schema`, `regex` and `ebnf` of `SamplingParams` from the request (at most one set)."""
    given: list[tuple[str, str, str]] = []
    schema = json_schema_of(req.response_format)
    if schema is not None:
        given.append(("response_format", "json_schema", schema))
    if req.regex is not None:
        given.append(("regex", "regex", req.regex))
    if req.guided_choice is not None:
        given.append(("guided_choice", "regex", choice_regex(req.guided_choice, "guided_choice")))
    if req.ebnf is not None:
        given.append(("ebnf", "ebnf", _text(req.ebnf, "ebnf")))
    if req.guided_json is not None:
        given.append(("guided_json", "json_schema", schema_text(req.guided_json, "guided_json")))
    if req.guided_regex is not None:
        given.append(("guided_regex", "regex", _text(req.guided_regex, "guided_regex")))
    if req.guided_grammar is not None:
        given.append(("guided_grammar", "ebnf", _text(req.guided_grammar, "guided_grammar")))
    if req.structured_outputs is not None:
        given += _structured_outputs(req.structured_outputs)
    if len(given) > 1:
        raise APIError(400, f"give {given[0][0]} or {given[1][0]}, not both: each holds the whole output",
                       given[1][0])
    out: dict[str, Optional[str]] = {"json_schema": None, "regex": None, "ebnf": None}
    if given:
        out[given[0][1]] = given[0][2]
    return out


def asks_grammar(req: SamplingFields) -> bool:
    """Whether the request holds its output to a grammar in any spelling (`grammar_fields`)."""
    return any(v is not None for v in grammar_fields(req).values())
