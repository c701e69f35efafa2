"""Function calling through a live `tierlm serve --tool-call-parser hermes`: a scripted model writes the calls
(`scripted_model`), the server returns them as `tool_calls`, streamed and not, with the OpenAI client too; a
conversation that carries earlier calls and their results renders as the model's own template renders it."""
from __future__ import annotations

import json

import httpx
import pytest
from transformers import AutoTokenizer

from tests.server.helpers import start_server
from tests.server.scripted_model import make_scripted_model

PARIS = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
SCRIPTS = {
    "call": ["Checking.", "<tool_call>", PARIS, "</tool_call>"],
    "two": ['<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>',
            '\n<tool_call>\n{"name": "get_time", "arguments": {"zone": "UTC"}}\n</tool_call>'],
    "text": ["It is sunny", " in Paris."],
    "broken": ['<tool_call>{"name": "get_weather", "arguments": {"city": ', '"Rome"</tool_call>'],
}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "The weather in a city.",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                          "required": ["city"]}}},
         {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}]
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def scripted(tmp_path_factory):
    path = tmp_path_factory.mktemp("scripted")
    firsts = make_scripted_model(path, list(SCRIPTS.values()))
    return path, dict(zip(SCRIPTS, firsts))


@pytest.fixture(scope="module")
def server(scripted, tmp_path_factory):
    srv = start_server(scripted[0], tmp_path_factory.mktemp("tools"), "--tool-call-parser", "hermes")
    yield srv
    assert srv.stop() == 0, srv.log_text()


def _body(server, scripted, script, **extra):
    return {"model": server.model, "messages": QUESTION, "tools": TOOLS, "max_tokens": 16, "temperature": 0,
            "logit_bias": {str(scripted[1][script]): 5}, **extra}


def _chat(server, scripted, script, **extra):
    r = httpx.post(server.url + "/v1/chat/completions", json=_body(server, scripted, script, **extra), timeout=60)
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    calls = [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in choice["message"]["tool_calls"]]
    assert all(c["id"].startswith("call_") and c["type"] == "function" for c in choice["message"]["tool_calls"])
    return choice["message"]["content"], calls, choice["finish_reason"]


def _stream(server, scripted, script, **extra):
    body = _body(server, scripted, script, stream=True, **extra)
    content, calls, finish = "", {}, None
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=60) as r:
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            for choice in json.loads(line[6:])["choices"]:
                content += choice["delta"].get("content") or ""
                for call in choice["delta"].get("tool_calls") or []:
                    assert call["index"] not in calls and call["id"].startswith("call_")
                    calls[call["index"]] = (call["function"]["name"], json.loads(call["function"]["arguments"]))
                finish = choice["finish_reason"] or finish
    return content or None, [calls[i] for i in sorted(calls)], finish


def test_calls_come_out_of_the_answer_streamed_and_not(server, scripted):
    want = {"call": ("Checking.", [("get_weather", {"city": "Paris"})], "tool_calls"),
            "two": (None, [("get_weather", {"city": "Oslo"}), ("get_time", {"zone": "UTC"})], "tool_calls"),
            "text": ("It is sunny in Paris.", [], "stop"),
            "broken": ("".join(SCRIPTS["broken"]), [], "stop")}  # not a call: all of it stays text
    for script, expected in want.items():
        assert _chat(server, scripted, script) == expected, script
        assert _stream(server, scripted, script) == expected, script


def test_parallel_tool_calls_false_keeps_the_first(server, scripted):
    one = [("get_weather", {"city": "Oslo"})]
    assert _chat(server, scripted, "two", parallel_tool_calls=False) == (None, one, "tool_calls")
    assert _stream(server, scripted, "two", parallel_tool_calls=False) == (None, one, "tool_calls")


def test_tool_choice_none_renders_the_tools_and_leaves_the_text(server, scripted):
    text = "".join(SCRIPTS["call"])
    assert _chat(server, scripted, "call", tool_choice="none") == (text, [], "stop")
    assert _stream(server, scripted, "call", tool_choice="none") == (text, [], "stop")
    r = httpx.post(server.url + "/tokenize", json={"messages": QUESTION, "tools": TOOLS}).json()
    assert r["count"] > httpx.post(server.url + "/tokenize", json={"messages": QUESTION}).json()["count"]


def test_a_conversation_with_calls_renders_as_the_template_does(server, scripted):
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    messages = [*QUESTION, {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"}]
    tok = AutoTokenizer.from_pretrained(scripted[0])
    as_objects = [*QUESTION, {"role": "assistant", "content": "", "tool_calls": [
        {**call, "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]}, messages[2]]
    text = tok.apply_chat_template(as_objects, tools=TOOLS, add_generation_prompt=True, tokenize=False)
    assert '"arguments": {"city": "Paris"}' in text and "<tools>" in text and "sunny, 21 C" in text
    r = httpx.post(server.url + "/tokenize", json={"messages": messages, "tools": TOOLS})
    assert r.status_code == 200, r.text
    assert r.json()["tokens"] == tok(text, add_special_tokens=False)["input_ids"]
    body = _body(server, scripted, "text", messages=messages)
    answer = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=60).json()
    assert answer["choices"][0]["message"]["content"] == "It is sunny in Paris."
    assert answer["usage"]["prompt_tokens"] == r.json()["count"]


def test_forced_calls_follow_the_tools_schemas(server, scripted):
    """tool_choice 'required' or a named function: the answer is held to JSON of the calls (as vLLM does), whatever
    the model would write; the scripted model's own pieces are all masked out, so it writes what the grammar
    leaves (ties to the lowest token id: enum-only parameters make the answer a single one)."""
    tools = [{"type": "function", "function": {"name": "get_time", "parameters": {
        "type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}}, "required": ["zone"],
        "additionalProperties": False}}}, TOOLS[0]]
    named = {"type": "function", "function": {"name": "get_time"}}
    for extra in ({"tool_choice": named}, {"tool_choice": "required", "parallel_tool_calls": False}):
        content, calls, finish = _chat(server, scripted, "text", tools=tools, max_tokens=64, **extra)
        assert content is None and finish == "tool_calls" and len(calls) == 1, (extra, content)
        assert calls[0][0] in ("get_time", "get_weather") and isinstance(calls[0][1], dict)
        assert _stream(server, scripted, "text", tools=tools, max_tokens=64, **extra) == (content, calls, finish)
    assert _chat(server, scripted, "text", tools=tools, tool_choice=named, max_tokens=64)[1] == [
        ("get_time", {"zone": "CET"})]  # "CET" begins with a lower id than "UTC"


def test_the_openai_client_reads_the_calls(server, scripted):
    import openai

    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none")
    bias = {str(scripted[1]["call"]): 5}
    out = client.chat.completions.create(model=server.model, messages=QUESTION, tools=TOOLS, temperature=0,
                                         max_tokens=16, logit_bias=bias)
    msg = out.choices[0].message
    assert out.choices[0].finish_reason == "tool_calls" and msg.content == "Checking."
    assert [(c.function.name, json.loads(c.function.arguments)) for c in msg.tool_calls] == [
        ("get_weather", {"city": "Paris"})]
    names, args = {}, {}
    for chunk in client.chat.completions.create(model=server.model, messages=QUESTION, tools=TOOLS, temperature=0,
                                                max_tokens=16, logit_bias=bias, stream=True):
        for c in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            names[c.index] = (names.get(c.index) or "") + (c.function.name or "")
            args[c.index] = (args.get(c.index) or "") + (c.function.arguments or "")
    assert names == {0: "get_weather"} and json.loads(args[0]) == {"city": "Paris"}
