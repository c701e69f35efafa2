"""`--tool-call-parser`: function calls taken out of whole answers and out of streams cut anywhere (the pieces join
into the whole answer's split), for both formats; and one choice's reasoning, text and calls together."""
from __future__ import annotations

import json
import random

import pytest

from tierlm.server.chat_output import ChoiceOutput
from tierlm.server.reasoning import reasoning_parser
from tierlm.server.tool_parsers import PARSERS, ForcedToolCalls, ToolCall, forced_schema, tool_call_parser

WEATHER = ToolCall("get_weather", '{"city": "Paris", "unit": "celsius"}')
TIME = ToolCall("get_time", '{"zone": "UTC+1"}')
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call>'
CALL2 = '<tool_call>\n{"name": "get_time", "arguments": {"zone": "UTC+1"}}\n</tool_call>'


@pytest.mark.parametrize("text, want", [
    (CALL, ("", [WEATHER])),
    ("Let me look.\n\n" + CALL, ("Let me look.\n\n", [WEATHER])),
    (CALL + "\n" + CALL2 + "\n", ("", [WEATHER, TIME])),
    ("no call here", ("no call here", [])),
    ('<tool_call>{"name": "get_time", "arguments": "{\\"zone\\": \\"UTC+1\\"}"}</tool_call>', ("", [TIME])),
    ('<tool_call>\n{"name": "get_time", "arguments": {"zone": "UTC+1"}}', ("", [TIME])),  # unclosed at the end
    ('<tool_call>{"name": "get_weather", "arguments": {"city": "Par', ('<tool_call>{"name": "get_weather", '
                                                                      '"arguments": {"city": "Par', [])),
    ("x " + CALL + " then " + CALL2, ("x then ", [WEATHER, TIME])),  # text between calls is content
    ('<tool_call>{"arguments": {}}</tool_call> rest', ('<tool_call>{"arguments": {}}</tool_call> rest', [])),
    ('<tool_call>[1, 2]</tool_call>', ('<tool_call>[1, 2]</tool_call>', [])),
    ('<tool_call>{"name": "f", "arguments": 3}</tool_call>', ('<tool_call>{"name": "f", "arguments": 3}'
                                                              '</tool_call>', [])),
    ("<tool_ca", ("<tool_ca", [])),
    ("", ("", [])),
])
def test_hermes(text, want):
    assert tool_call_parser("hermes").parse(text) == want
    assert type(tool_call_parser("qwen25")) is type(tool_call_parser("hermes"))


@pytest.mark.parametrize("text, want", [
    ('{"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}', ("", [WEATHER])),
    ('<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}; '
     '{"name": "get_time", "arguments": {"zone": "UTC+1"}}', ("", [WEATHER, TIME])),
    ('  {"name": "get_time", "parameters": {"zone": "UTC+1"}}\n', ("", [TIME])),
    ("The weather is fine.", ("The weather is fine.", [])),
    ('{"name": "get_time", "parameters": {"zone": "UTC', ('{"name": "get_time", "parameters": {"zone": "UTC', [])),
    ('{"not": "a call"}', ('{"not": "a call"}', [])),
    ('{"name": "f", "parameters": {}} trailing', ('{"name": "f", "parameters": {}} trailing', [])),
    ("<|python", ("<|python", [])),
])
def test_llama3_json(text, want):
    assert tool_call_parser("llama3_json").parse(text) == want


TEXTS = {"hermes": ["Let me look.\n\n" + CALL, CALL + "\n" + CALL2 + "\n", "x <tool_call y", "<tool_call>{bad}",
                    "a" + CALL + "b", "<tool_c", CALL[:-3]],
         "llama3_json": ['{"name": "get_time", "parameters": {"zone": "UTC+1"}}', "plain text", "  \n",
                         '<|python_tag|>{"name": "f", "parameters": {}}', "<|py no", '{"name": 1}']}


@pytest.mark.parametrize("name", sorted(TEXTS))
def test_a_stream_cut_anywhere_joins_into_the_parse(name):
    parser, rng = tool_call_parser(name), random.Random(0)
    for text in TEXTS[name]:
        for _ in range(60):
            cuts = sorted(rng.sample(range(len(text) + 1), k=min(5, len(text) + 1)))
            pieces = [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)])]
            stream, content, calls = parser.stream(), "", []
            for k, piece in enumerate(pieces):
                c, new = stream.feed(piece, k == len(pieces) - 1)
                content, calls = content + c, calls + new
            assert (content, calls) == parser.parse(text), (text, pieces)


def test_text_goes_out_at_once_except_what_could_begin_a_call():
    stream = tool_call_parser("hermes").stream()
    assert stream.feed("Sure, <tool", False) == ("Sure, ", [])
    assert stream.feed("_call>{\"name\": \"get_time\", ", False) == ("", [])
    assert stream.feed('"arguments": {"zone": "UTC+1"}}</tool_call>', False) == ("", [TIME])
    assert stream.feed("\n", True) == ("", [])


def test_a_call_in_openai_shape():
    call = WEATHER.to_openai(2)
    assert call["index"] == 2 and call["type"] == "function" and call["id"].startswith("call_")
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris", "unit": "celsius"}
    assert WEATHER.to_openai()["id"] != WEATHER.to_openai()["id"] and "index" not in WEATHER.to_openai()
    assert set(PARSERS) >= {"hermes", "llama3_json"}


def test_choice_output_reasoning_then_calls():
    text = "<think>the user wants weather</think>\n\nChecking.\n" + CALL + CALL2
    whole = ChoiceOutput(reasoning_parser("qwen3"), True, tool_call_parser("hermes"))
    message, finish = whole.message(text, "stop")
    assert (message["reasoning_content"], message["content"], finish) == ("the user wants weather", "Checking.\n",
                                                                           "tool_calls")
    assert [c["function"]["name"] for c in message["tool_calls"]] == ["get_weather", "get_time"]
    one = ChoiceOutput(None, True, tool_call_parser("hermes"), parallel=False)
    got = [one.feed(piece, False)[2] for piece in (CALL, CALL2)] + [one.feed("", True)[2]]
    assert got == [[WEATHER], [], []] and one.finish_reason("length") == "length"
    plain = ChoiceOutput(None, True, None)
    assert plain.message(CALL, "stop") == ({"role": "assistant", "content": CALL, "reasoning_content": None,
                                             "tool_calls": []}, "stop")
    only_call = ChoiceOutput(None, True, tool_call_parser("hermes")).message(CALL, "stop")[0]
    assert only_call["content"] is None


def test_forced_calls_and_their_schema():
    named, required = ForcedToolCalls("get_time"), ForcedToolCalls(None)
    assert named.parse('{"zone": "UTC+1"}') == ("", [TIME])
    assert required.parse('[{"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}, '
                          '{"name": "get_time", "parameters": {"zone": "UTC+1"}}]') == ("", [WEATHER, TIME])
    for text in ('{"zone": "UT', "[]", '[{"nam": "f"}]', "[1]", '{"a": 1}'):  # cut short, or not calls: text
        assert required.parse(text) == (text, [])
    for text in ('{"zone": "UT', "[1]", '"UTC"'):
        assert named.parse(text) == (text, [])
    tools = [{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}},
             {"type": "function", "function": {"name": "ping"}}]
    assert json.loads(forced_schema(tools, "ping")) == {"type": "object"}
    schema = json.loads(forced_schema(tools, None, parallel=False))
    assert schema["minItems"] == 1 and schema["maxItems"] == 1
    assert [a["properties"]["name"]["enum"] for a in schema["items"]["anyOf"]] == [["get_time"], ["ping"]]
    assert "maxItems" not in json.loads(forced_schema(tools, None))
