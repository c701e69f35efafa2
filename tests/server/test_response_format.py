"""OpenAI's `response_format` through a live server: a JSON schema (the official client, streamed and not; on
completions too, as vLLM takes it), any JSON object, plain text, and SGLang's `json_schema` on /generate; each
answer parses and follows its schema; SGLang's `regex` and vLLM's `guided_choice` likewise."""
from __future__ import annotations

import json

import httpx

from tests.server.openai_fixtures import client, server  # noqa: F401  (fixtures)

SCHEMA = {"type": "object", "properties": {"city": {"enum": ["Paris", "Oslo"]}, "sunny": {"type": "boolean"}},
          "required": ["city", "sunny"], "additionalProperties": False}
FORMAT = {"type": "json_schema", "json_schema": {"name": "weather", "schema": SCHEMA, "strict": True}}
MESSAGES = [{"role": "user", "content": "Weather?"}]


def _follows(text: str) -> bool:
    doc = json.loads(text)
    return set(doc) == {"city", "sunny"} and doc["city"] in ("Paris", "Oslo") and isinstance(doc["sunny"], bool)


def test_a_json_schema_answer_streamed_and_not(client, server):  # noqa: F811
    out = client.chat.completions.create(model=server.model, messages=MESSAGES, max_tokens=60, temperature=0,
                                         response_format=FORMAT)
    text = out.choices[0].message.content
    assert out.choices[0].finish_reason == "stop" and _follows(text), text
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in client.chat.completions.create(
        model=server.model, messages=MESSAGES, max_tokens=60, temperature=0, response_format=FORMAT, stream=True)
        if chunk.choices)
    assert streamed == text
    sampled = client.chat.completions.create(model=server.model, messages=MESSAGES, max_tokens=60, temperature=1.0,
                                             n=3, seed=5, response_format=FORMAT)
    assert all(_follows(c.message.content) for c in sampled.choices)


def test_json_object_text_and_generate(client, server):  # noqa: F811
    obj = client.chat.completions.create(model=server.model, messages=MESSAGES, max_tokens=60, temperature=0,
                                         response_format={"type": "json_object"})
    assert obj.choices[0].message.content.startswith("{")
    if obj.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(obj.choices[0].message.content), dict)
    plain = client.chat.completions.create(model=server.model, messages=MESSAGES, max_tokens=8, temperature=0,
                                           response_format={"type": "text"})
    free = client.chat.completions.create(model=server.model, messages=MESSAGES, max_tokens=8, temperature=0)
    assert plain.choices[0].message.content == free.choices[0].message.content
    cmpl = client.completions.create(model=server.model, prompt="Weather?", max_tokens=60, temperature=0,
                                     extra_body={"response_format": FORMAT})
    assert cmpl.choices[0].finish_reason == "stop" and _follows(cmpl.choices[0].text), cmpl.choices[0].text
    r = httpx.post(server.url + "/generate", timeout=60, json={"text": "Weather?", "sampling_params": {
        "max_tokens": 60, "temperature": 0, "json_schema": json.dumps(SCHEMA)}})
    assert r.status_code == 200 and _follows(r.json()["text"]), r.text


def test_regex_and_guided_choice(client, server):  # noqa: F811
    import re

    choices = ["yes", "no (not at all)", "maybe."]
    picked = client.completions.create(model=server.model, prompt="Sunny?", max_tokens=20, temperature=1.0, n=4,
                                       seed=3, extra_body={"guided_choice": choices})
    assert all(c.text in choices and c.finish_reason == "stop" for c in picked.choices), picked.choices
    chat = client.chat.completions.create(model=server.model, messages=MESSAGES, max_tokens=20, temperature=0,
                                          extra_body={"regex": "[A-Z][a-z]{2,5}, [0-9]{1,2} C"})
    assert re.fullmatch("[A-Z][a-z]{2,5}, [0-9]{1,2} C", chat.choices[0].message.content)
    r = httpx.post(server.url + "/generate", timeout=60, json={"text": "Weather?", "sampling_params": {
        "max_tokens": 20, "temperature": 0, "regex": "(rain|sun)+"}})
    assert r.status_code == 200 and re.fullmatch("(rain|sun)+", r.json()["text"]), r.text


def test_ebnf_and_vllm_spellings(client, server):  # noqa: F811
    import re

    grammar = 'root ::= ("yes" | "no") ", " [0-9] [0-9]?'
    pattern = "(yes|no), [0-9][0-9]?"
    for extra in ({"ebnf": grammar}, {"guided_grammar": grammar}, {"structured_outputs": {"grammar": grammar}}):
        out = client.completions.create(model=server.model, prompt="Sunny?", max_tokens=20, temperature=1.0, n=2,
                                        seed=5, extra_body=extra)
        assert all(re.fullmatch(pattern, c.text) and c.finish_reason == "stop" for c in out.choices), (extra, out)
    chat = client.chat.completions.create(model=server.model, messages=MESSAGES, max_tokens=60, temperature=0,
                                          extra_body={"guided_json": SCHEMA})
    assert _follows(chat.choices[0].message.content), chat.choices[0].message.content
    for extra in ({"guided_regex": "(rain|sun)+"}, {"structured_outputs": {"regex": "(rain|sun)+"}}):
        got = client.completions.create(model=server.model, prompt="Weather?", max_tokens=20, temperature=0,
                                        extra_body=extra).choices[0].text
        assert re.fullmatch("(rain|sun)+", got), (extra, got)
    picked = client.completions.create(model=server.model, prompt="Sunny?", max_tokens=20, temperature=0,
                                       extra_body={"structured_outputs": {"choice": ["yes", "no"]}})
    assert picked.choices[0].text in ("yes", "no")
    obj = client.completions.create(model=server.model, prompt="Weather?", max_tokens=40, temperature=0,
                                    extra_body={"structured_outputs": {"json": json.dumps(SCHEMA)}})
    assert _follows(obj.choices[0].text), obj.choices[0].text
    r = httpx.post(server.url + "/generate", timeout=60, json={"text": "Weather?", "sampling_params": {
        "max_new_tokens": 20, "temperature": 0, "ebnf": grammar}})
    assert r.status_code == 200 and re.fullmatch(pattern, r.json()["text"]), r.text
