"""A matrix of bad requests against a live server with --api-key: each gets the right 4xx and an OpenAI-style
error body naming the field; the server answers normally afterwards."""
from __future__ import annotations

import json
from typing import Any, Optional

import httpx
import pytest

from tests.server.helpers import start_server

KEY = "sekret-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
JSON = {"Content-Type": "application/json"}
LONG = " ".join(["fox"] * 700)  # far beyond the 512-token context


def cmpl(**fields: Any) -> dict:
    return {"model": "MODEL", "prompt": "Hello", "max_tokens": 4, **fields}


def chat(**fields: Any) -> dict:
    return {"model": "MODEL", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, **fields}


def drop(d: dict, key: str) -> dict:
    return {k: v for k, v in d.items() if k != key}


USER = {"role": "user", "content": "Hi"}
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
CALL = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
TOOL_ANSWER = {"role": "tool", "tool_call_id": "c1", "content": "sunny"}


def assistant_call(arguments: str) -> dict:
    return {"role": "assistant", "content": None, "tool_calls": [{**CALL, "function": {**CALL["function"],
                                                                                        "arguments": arguments}}]}


C, CH, GEN, TOK, DETOK = "/v1/completions", "/v1/chat/completions", "/generate", "/tokenize", "/detokenize"
# (case id, path, body (dict -> JSON, bytes -> raw), extra headers, status, field named in param or message)
CASES: list[tuple[str, str, Any, Optional[dict], int, Optional[str]]] = [
    ("malformed-json", C, b'{"model": "MODEL", "prompt": ', None, 400, "JSON"),
    ("invalid-utf8", C, b'{"model": "MODEL", "prompt": "\xff\xfe\xfa"}', None, 400, "UTF-8"),
    ("body-not-object", C, b"[1, 2, 3]", None, 400, "JSON object"),
    ("empty-body", C, b"", None, 400, "body"),
    ("text-plain-body", C, b"hello", {"Content-Type": "text/plain"}, 400, "JSON"),
    ("max-tokens-string", C, cmpl(max_tokens="16"), None, 400, "max_tokens"),
    ("temperature-string", C, cmpl(temperature="hot"), None, 400, "temperature"),
    ("stream-string", C, cmpl(stream="yes"), None, 400, "stream"),
    ("prompt-number", C, cmpl(prompt=123), None, 400, "prompt"),
    ("prompt-mixed-list", C, cmpl(prompt=[1, "a"]), None, 400, "prompt"),
    ("unknown-field", C, cmpl(frobnicate=1), None, 400, "frobnicate"),
    ("missing-model", C, drop(cmpl(), "model"), None, 400, "model"),
    ("missing-prompt", C, drop(cmpl(), "prompt"), None, 400, "prompt"),
    ("negative-max-tokens", C, cmpl(max_tokens=-1), None, 400, "max_tokens"),
    ("zero-max-tokens", C, cmpl(max_tokens=0), None, 400, "max_tokens"),
    ("huge-max-tokens", C, cmpl(max_tokens=10**12), None, 400, "max_tokens"),
    ("negative-temperature", C, cmpl(temperature=-0.5), None, 400, "temperature"),
    ("nan-temperature", C, b'{"model": "MODEL", "prompt": "Hi", "temperature": NaN}', None, 400, "temperature"),
    ("top-p-above-1", C, cmpl(top_p=1.5), None, 400, "top_p"),
    ("top-p-zero", C, cmpl(top_p=0), None, 400, "top_p"),
    ("n-zero", C, cmpl(n=0), None, 400, "n"),
    ("n-huge", C, cmpl(n=100000), None, 400, "n"),
    ("negative-seed", C, cmpl(seed=-1), None, 400, "seed"),
    ("logprobs-too-many", C, cmpl(logprobs=50), None, 400, "logprobs"),
    ("too-many-stops", C, cmpl(stop=[str(i) for i in range(20)]), None, 400, "stop"),
    ("empty-stop", C, cmpl(stop=[""]), None, 400, "stop"),
    ("empty-prompt", C, cmpl(prompt=""), None, 400, "prompt"),
    ("empty-prompt-list", C, cmpl(prompt=[]), None, 400, "prompt"),
    ("token-id-outside-vocab", C, cmpl(prompt=[1, 2, 10**9]), None, 400, "prompt"),
    ("oversize-prompt", C, cmpl(prompt=LONG), None, 413, "prompt"),
    ("presence-penalty-above-2", C, cmpl(presence_penalty=2.5), None, 400, "presence_penalty"),
    ("frequency-penalty-string", C, cmpl(frequency_penalty="1"), None, 400, "frequency_penalty"),
    ("repetition-penalty-zero", C, cmpl(repetition_penalty=0), None, 400, "repetition_penalty"),
    ("repetition-penalty-negative", GEN, {"text": "Hi", "sampling_params": {"repetition_penalty": -1}}, None, 400,
     "sampling_params.repetition_penalty"),
    ("logit-bias-key-not-an-id", C, cmpl(logit_bias={"fox": 1.0}), None, 400, "logit_bias"),
    ("logit-bias-negative-key", C, cmpl(logit_bias={"-5": 1.0}), None, 400, "logit_bias"),
    ("logit-bias-above-100", C, cmpl(logit_bias={"5": 150.0}), None, 400, "logit_bias"),
    ("logit-bias-outside-vocab", C, cmpl(logit_bias={"1000000": 1.0}), None, 400, "logit_bias"),
    ("logit-bias-string-value", C, cmpl(logit_bias={"5": "1"}), None, 400, "logit_bias.5"),
    ("logit-bias-generate-key", GEN, {"text": "Hi", "sampling_params": {"logit_bias": {"x": 1}}}, None, 400,
     "sampling_params.logit_bias"),
    ("logit-bias-generate-range", GEN, {"text": "Hi", "sampling_params": {"logit_bias": {"5": -101}}}, None, 400,
     "sampling_params.logit_bias"),
    ("echo-string", C, cmpl(echo="yes"), None, 400, "echo"),
    ("prompt-logprobs-too-many", C, cmpl(prompt_logprobs=21), None, 400, "prompt_logprobs"),
    ("prompt-logprobs-negative", CH, chat(prompt_logprobs=-1), None, 400, "prompt_logprobs"),
    ("prompt-logprobs-streamed", C, cmpl(prompt_logprobs=1, stream=True), None, 400, "prompt_logprobs"),
    ("prompt-logprobs-generate", GEN, {"text": "Hi", "sampling_params": {"prompt_logprobs": 99}}, None, 400,
     "sampling_params.prompt_logprobs"),
    ("unknown-model", C, cmpl(model="gpt-17"), None, 404, "model"),
    ("empty-messages", CH, chat(messages=[]), None, 400, "messages"),
    ("unknown-role", CH, chat(messages=[{"role": "wizard", "content": "hi"}]), None, 400, "messages.0.role"),
    ("message-without-content", CH, chat(messages=[{"role": "user"}]), None, 400, "messages.0.content"),
    ("message-content-number", CH, chat(messages=[{"role": "user", "content": 5}]), None, 400, "messages.0.content"),
    ("messages-not-list", CH, chat(messages="hi"), None, 400, "messages"),
    ("top-logprobs-without-logprobs", CH, chat(top_logprobs=2), None, 400, "top_logprobs"),
    ("chat-oversize", CH, chat(messages=[{"role": "user", "content": LONG}]), None, 413, "messages"),
    ("chat-huge-max-completion-tokens", CH, chat(max_completion_tokens=10**9), None, 400, "max_completion_tokens"),
    ("chat-unknown-model", CH, chat(model="nope"), None, 404, "model"),
    ("tools-without-parser", CH, chat(tools=[TOOL]), None, 400, "tool_choice"),
    ("tools-template-cannot-render", CH, chat(tools=[TOOL], tool_choice="none"), None, 400, "tools"),
    ("tool-choice-required-template-cannot-render", CH, chat(tools=[TOOL], tool_choice="required"), None, 400,
     "tools"),
    ("tool-choice-names-no-tool", CH, chat(tools=[TOOL], tool_choice={"type": "function", "function": {"name": "f"}}),
     None, 400, "tool_choice.function.name"),
    ("tool-choice-required-with-json-format", CH, chat(tools=[TOOL], tool_choice="required", response_format={
        "type": "json_object"}), None, 400, "response_format"),
    ("tool-choice-without-tools", CH, chat(tool_choice="auto"), None, 400, "tool_choice"),
    ("tool-choice-unknown", CH, chat(tools=[TOOL], tool_choice="sometimes"), None, 400, "tool_choice"),
    ("tool-name-with-space", CH, chat(tools=[{"type": "function", "function": {"name": "a b"}}], tool_choice="none"),
     None, 400, "tools.0.function.name"),
    ("tool-type-not-function", CH, chat(tools=[{"type": "retrieval", "function": {"name": "f"}}]), None, 400,
     "tools.0.type"),
    ("tool-message-without-content", CH, chat(messages=[USER, {"role": "tool", "tool_call_id": "c1"}]), None, 400,
     "messages.1.content"),
    ("tool-calls-on-a-user-message", CH, chat(messages=[{**USER, "tool_calls": [CALL]}]), None, 400,
     "messages.0.tool_calls"),
    ("tool-call-arguments-not-json", CH, chat(messages=[USER, assistant_call("not json"), TOOL_ANSWER]), None, 400,
     "messages.1.tool_calls.0.function.arguments"),
    ("tool-call-arguments-an-array", CH, chat(messages=[USER, assistant_call("[1, 2]"), TOOL_ANSWER]), None, 400,
     "messages.1.tool_calls.0.function.arguments"),
    ("tool-call-arguments-number", CH, chat(messages=[USER, {"role": "assistant", "tool_calls": [
        {**CALL, "function": {"name": "f", "arguments": {"a": 1}}}]}]), None, 400, "arguments"),
    ("tool-call-id-on-a-user-message", CH, chat(messages=[{**USER, "tool_call_id": "c1"}]), None, 400,
     "messages.0.tool_call_id"),
    ("tools-too-many", CH, chat(tools=[TOOL] * 129, tool_choice="none"), None, 400, "tools"),
    ("response-format-unknown-type", CH, chat(response_format={"type": "xml"}), None, 400, "response_format"),
    ("response-format-without-schema", CH, chat(response_format={"type": "json_schema", "json_schema": {
        "name": "x"}}), None, 400, "response_format.json_schema"),
    ("response-format-schema-not-followable", CH, chat(response_format={"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "wat"}}}), None, 400, "json_schema"),
    ("response-format-extra-key", CH, chat(response_format={"type": "json_object", "schema": {}}), None, 400,
     "response_format"),
    ("regex-and-guided-choice", C, cmpl(regex="a+", guided_choice=["a"]), None, 400, "guided_choice"),
    ("guided-choice-empty-text", C, cmpl(guided_choice=["a", ""]), None, 400, "guided_choice.1"),
    ("regex-not-compilable", CH, chat(regex="(unclosed"), None, 400, "regex"),
    ("regex-with-json-format", CH, chat(regex="a+", response_format={"type": "json_object"}), None, 400, "regex"),
    ("ebnf-not-parsable", C, cmpl(ebnf="root ::= foo"), None, 400, "ebnf"),
    ("regex-lone-surrogate", C, cmpl(regex="a\ud800"), None, 400, "regex"),
    ("ebnf-lone-surrogate", C, cmpl(ebnf='root ::= "\udfff"'), None, 400, "ebnf"),
    ("guided-json-lone-surrogate", C, cmpl(guided_json='{"enum": ["\ud800"]}'), None, 400, "guided_json"),
    ("generate-regex-lone-surrogate", GEN, {"text": "Hi", "sampling_params": {"regex": "\ud800"}}, None, 400,
     "sampling_params.regex"),
    ("json-schema-too-deep", GEN, {"text": "Hi", "sampling_params": {
        "json_schema": '{"a": ' * 200 + "1" + "}" * 200}}, None, 400, "sampling_params.json_schema"),
    ("ebnf-empty", C, cmpl(ebnf=""), None, 400, "ebnf"),
    ("guided-grammar-and-regex", C, cmpl(regex="a+", guided_grammar='root ::= "a"'), None, 400, "guided_grammar"),
    ("guided-json-not-an-object", CH, chat(guided_json="[1]"), None, 400, "guided_json"),
    ("structured-outputs-unknown-key", C, cmpl(structured_outputs={"xml": "a"}), None, 400, "structured_outputs"),
    ("structured-outputs-two-keys", C, cmpl(structured_outputs={"regex": "a+", "choice": ["a"]}), None, 400,
     "structured_outputs.choice"),
    ("structured-outputs-choice-not-list", C, cmpl(structured_outputs={"choice": "a"}), None, 400,
     "structured_outputs.choice"),
    ("generate-ebnf-and-regex", GEN, {"text": "Hi", "sampling_params": {"regex": "a", "ebnf": 'root ::= "a"'}},
     None, 400, "sampling_params.ebnf"),
    ("generate-json-schema-not-json", GEN, {"text": "Hi", "sampling_params": {"json_schema": "{nope"}}, None, 400,
     "sampling_params.json_schema"),
    ("tool-parameters-nan", CH, b'{"model": "MODEL", "messages": [{"role": "user", "content": "Hi"}], "tools": '
     b'[{"type": "function", "function": {"name": "f", "parameters": {"maximum": NaN}}}], "tool_choice": "none"}',
     None, 400, "NaN and infinity"),
    ("template-kwargs-infinity", CH, b'{"model": "MODEL", "messages": [{"role": "user", "content": "Hi"}], '
     b'"chat_template_kwargs": {"t": Infinity}}', None, 400, "chat_template_kwargs"),
    ("response-format-schema-nan", CH, b'{"model": "MODEL", "messages": [{"role": "user", "content": "Hi"}], '
     b'"response_format": {"type": "json_schema", "json_schema": {"schema": {"maximum": NaN}}}}', None, 400,
     "response_format.json_schema.schema"),
    ("tokenize-tools-without-messages", TOK, {"prompt": "hi", "tools": [TOOL]}, None, 400, "tools"),
    ("min-tokens-over-max-tokens", C, cmpl(min_tokens=5, max_tokens=4), None, 400, "min_tokens"),
    ("min-tokens-negative", CH, chat(min_tokens=-1), None, 400, "min_tokens"),
    ("min-tokens-string", C, cmpl(min_tokens="3"), None, 400, "min_tokens"),
    ("generate-min-tokens-over-max", GEN, {"input_ids": [1], "sampling_params": {"min_tokens": 9, "max_tokens": 8}},
     None, 400, "sampling_params.min_tokens"),
    ("hidden-states-unsupported", CH, chat(return_hidden_states=True), None, 400, "return_hidden_states"),
    ("continue-final-with-generation-prompt", CH, chat(continue_final_message=True), None, 400,
     "continue_final_message"),
    ("continue-final-after-user", CH, chat(continue_final_message=True, add_generation_prompt=False), None, 400,
     "continue_final_message"),
    ("separate-reasoning-string", CH, chat(separate_reasoning="yes"), None, 400, "separate_reasoning"),
    ("generate-both-inputs", GEN, {"input_ids": [1, 2], "text": "hi"}, None, 400, "input_ids"),
    ("generate-no-input", GEN, {"sampling_params": {}}, None, 400, "input_ids"),
    ("generate-top-k-below-off", GEN, {"input_ids": [1, 2], "sampling_params": {"top_k": -2}}, None, 400, "top_k"),
    ("generate-unknown-param", GEN, {"input_ids": [1], "sampling_params": {"beam": 4}}, None, 400,
     "sampling_params.beam"),
    ("generate-negative-token", GEN, {"input_ids": [-3]}, None, 400, "input_ids"),
    ("utf16-body", C, json.dumps(cmpl()).encode("utf-16"), None, 400, "UTF-8"),
    ("lone-surrogate-prompt", C, cmpl(prompt="Hi \ud800"), None, 400, "prompt"),
    ("lone-surrogate-in-prompt-list", C, cmpl(prompt=["Hi", "\udfff"]), None, 400, "prompt.1"),
    ("lone-surrogate-stop", C, cmpl(stop="\ud800"), None, 400, "stop"),
    ("stop-token-id-beyond-64-bits", C, cmpl(stop_token_ids=[2**70]), None, 400, "stop_token_ids"),
    ("chat-lone-surrogate-content", CH, chat(messages=[{"role": "user", "content": "\ud800"}]), None, 400,
     "messages.0.content"),
    ("chat-lone-surrogate-stop", CH, chat(stop=["ok", "\ud800"]), None, 400, "stop"),
    ("generate-lone-surrogate-text", GEN, {"text": "\ud800"}, None, 400, "text"),
    ("generate-lone-surrogate-stop", GEN, {"text": "Hi", "sampling_params": {"stop": ["\ud800"]}}, None, 400,
     "sampling_params.stop"),
    ("generate-stop-token-id-beyond-64-bits", GEN, {"input_ids": [1], "sampling_params": {"stop_token_ids": [2**70]}},
     None, 400, "sampling_params.stop_token_ids"),
    ("priority-string", C, cmpl(priority="high"), None, 400, "priority"),
    ("priority-bool", C, cmpl(priority=True), None, 400, "priority"),
    ("chat-priority-beyond-64-bits", CH, chat(priority=2**70), None, 400, "priority"),
    ("generate-priority-float", GEN, {"input_ids": [1], "sampling_params": {"priority": 1.5}}, None, 400,
     "sampling_params.priority"),
    ("missing-api-key", C, cmpl(), {"Authorization": ""}, 401, "API key"),
    ("wrong-api-key", C, cmpl(), {"Authorization": "Bearer wrong"}, 401, "API key"),
    ("wrong-auth-scheme", C, cmpl(), {"Authorization": f"Basic {KEY}"}, 401, "API key"),
    ("tokenize-missing-api-key", TOK, {"prompt": "hi"}, {"Authorization": ""}, 401, "API key"),
    ("detokenize-missing-api-key", DETOK, {"tokens": [1]}, {"Authorization": ""}, 401, "API key"),
    ("tokenize-both-inputs", TOK, {"prompt": "hi", "messages": [{"role": "user", "content": "hi"}]}, None, 400,
     "prompt"),
    ("tokenize-no-input", TOK, {"model": "MODEL"}, None, 400, "prompt"),
    ("tokenize-unknown-model", TOK, {"model": "nope", "prompt": "hi"}, None, 404, "model"),
    ("tokenize-oversize", TOK, {"prompt": LONG}, None, 413, "prompt"),
    ("tokenize-empty-messages", TOK, {"messages": []}, None, 400, "messages"),
    ("tokenize-unknown-field", TOK, {"prompt": "hi", "truncate": 3}, None, 400, "truncate"),
    ("tokenize-lone-surrogate", TOK, {"prompt": "a\ud800b"}, None, 400, "prompt"),
    ("detokenize-out-of-vocab", DETOK, {"tokens": [1, 10**9]}, None, 400, "tokens"),
    ("detokenize-negative-id", DETOK, {"tokens": [-1]}, None, 400, "tokens"),
    ("detokenize-not-ids", DETOK, {"tokens": "hello"}, None, 400, "tokens"),
    ("unknown-path", "/v1/embeddings", cmpl(), None, 404, "/v1/embeddings"),
]


@pytest.fixture(scope="module")
def server(tiny_qwen3, tmp_path_factory):
    srv = start_server(tiny_qwen3, tmp_path_factory.mktemp("bad"), "--api-key", KEY,
                       "--max-running-requests", "1", "--max-waiting-requests", "1")
    yield srv
    assert srv.stop() == 0, srv.log_text()


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def _substitute(body: Any, model: str) -> Any:
    if isinstance(body, dict):
        return json.dumps(body).replace('"MODEL"', json.dumps(model)).encode()
    return body.replace(b'"MODEL"', json.dumps(model).encode())


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_request(server, http, case):
    _, path, body, headers, status, field = case
    hdrs = {**AUTH, **({} if isinstance(body, bytes) and headers and "Content-Type" in headers else JSON),
            **(headers or {})}
    hdrs = {k: v for k, v in hdrs.items() if v}
    r = http.post(path, content=_substitute(body, server.model), headers=hdrs)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert isinstance(err["message"], str) and err["message"] and err["type"]
    assert "Traceback" not in r.text
    if field:
        assert field in (err.get("param") or "") or field in err["message"], err


def test_method_not_allowed_and_health_need_no_key(server, http):
    r = http.get(C, headers=AUTH)
    assert r.status_code == 405 and "not allowed" in r.json()["error"]["message"]
    assert http.get("/health").status_code == 200
    assert http.get("/metrics").status_code == 200


def test_full_queue_is_503(server):
    import asyncio

    async def one(client: httpx.AsyncClient) -> httpx.Response:
        return await client.post(C, json=cmpl(model=server.model, max_tokens=100, ignore_eos=True), headers=AUTH)

    async def main() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            return await asyncio.gather(*[one(client) for _ in range(5)])

    responses = asyncio.run(main())
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) >= 1 and codes.count(503) >= 1 and set(codes) <= {200, 503}, codes
    err = next(r for r in responses if r.status_code == 503).json()["error"]
    assert err["type"] == "overloaded_error" and "max-waiting-requests" in err["message"]


def test_still_serves_after_bad_input(server, http):
    for _ in range(2):
        r = http.post(C, json=cmpl(model=server.model, max_tokens=3, ignore_eos=True), headers=AUTH)
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] == 3
    stats = server.stats()
    assert stats["num_running"] == 0 and stats["num_waiting"] == 0
    assert stats["frontend_in_flight"] == 0  # no refused request leaves an entry behind
