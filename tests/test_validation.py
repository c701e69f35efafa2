"""`tierlm.validation`'s JSON schema check: text of bounded size holding an object, nested at most
`MAX_SCHEMA_DEPTH` levels (a deeper one would hold the engine's step thread while it becomes a grammar)."""
from __future__ import annotations

import pytest

from tierlm.errors import RequestError
from tierlm.validation import MAX_SCHEMA_DEPTH, check_json_schema


def nested(levels: int) -> str:
    """A schema of `levels` objects inside one another (two JSON levels each)."""
    text = '{"type": "string"}'
    for _ in range(levels):
        text = '{"type": "object", "properties": {"a": ' + text + '}}'
    return text


def test_schemas_as_deep_as_real_ones_pass():
    check_json_schema(nested(MAX_SCHEMA_DEPTH // 2 - 1))
    check_json_schema('{"anyOf": [' + ", ".join(['{"type": "integer"}'] * 5000) + ']}')  # wide is fine


@pytest.mark.parametrize("text", [nested(MAX_SCHEMA_DEPTH // 2 + 1), nested(5000), "[" * 100000 + "]" * 100000])
def test_deeper_ones_are_refused_without_recursing(text):
    with pytest.raises(RequestError, match=f"nested more than {MAX_SCHEMA_DEPTH} levels deep") as e:
        check_json_schema(text, "response_format")
    assert e.value.param == "response_format"


def test_json_that_is_not_an_object_is_named_as_such():
    for text, kind in (("null", "NoneType"), ("[1, 2]", "list"), ("3", "int")):
        with pytest.raises(RequestError, match=f"must be a JSON object \\(a schema\\), got {kind}"):
            check_json_schema(text)
