"""Every spelling of a grammar-held output (`server.structured`) lands in the one `SamplingParams` field it means."""
from __future__ import annotations

import json

import pytest

from tierlm.server.errors import APIError
from tierlm.server.protocol import CompletionRequest
from tierlm.server.structured import asks_grammar, choice_regex, grammar_fields

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}}
G = 'root ::= "x"'


@pytest.mark.parametrize("extra, field, value", [
    ({"response_format": {"type": "json_object"}}, "json_schema", '{"type": "object"}'),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": SCHEMA}}}, "json_schema",
     json.dumps(SCHEMA)),
    ({"guided_json": SCHEMA}, "json_schema", json.dumps(SCHEMA)),
    ({"guided_json": json.dumps(SCHEMA)}, "json_schema", json.dumps(SCHEMA)),
    ({"structured_outputs": {"json": SCHEMA}}, "json_schema", json.dumps(SCHEMA)),
    ({"structured_outputs": {"json_object": True}}, "json_schema", '{"type": "object"}'),
    ({"regex": "a+"}, "regex", "a+"),
    ({"guided_regex": "a+"}, "regex", "a+"),
    ({"structured_outputs": {"regex": "a+"}}, "regex", "a+"),
    ({"guided_choice": ["a.b", "c"]}, "regex", r"(a\.b|c)"),
    ({"structured_outputs": {"choice": ["a.b", "c"]}}, "regex", r"(a\.b|c)"),
    ({"ebnf": G}, "ebnf", G),
    ({"guided_grammar": G}, "ebnf", G),
    ({"structured_outputs": {"grammar": G}}, "ebnf", G),
])
def test_each_spelling_sets_its_field(extra, field, value):
    req = CompletionRequest(model="m", prompt="p", **extra)
    got = grammar_fields(req)
    assert got == {**dict.fromkeys(("json_schema", "regex", "ebnf")), field: value} and asks_grammar(req)


def test_none_two_and_bad_choices():
    plain = CompletionRequest(model="m", prompt="p", response_format={"type": "text"},
                              structured_outputs={"json_object": False})
    assert not asks_grammar(plain)
    with pytest.raises(APIError) as e:
        grammar_fields(CompletionRequest(model="m", prompt="p", ebnf=G, guided_json=SCHEMA))
    assert e.value.param == "guided_json" and "give ebnf or guided_json, not both" in str(e.value)
    with pytest.raises(APIError) as e:
        choice_regex(["a", 3], "structured_outputs.choice")
    assert e.value.param == "structured_outputs.choice.1"
    assert choice_regex(["(x)?", "y|z"], "c") == r"(\(x\)\?|y\|z)"
