"""The official `openai` client against a live `tierlm serve`: completions and chat, streaming and not,
greedy parity with the offline `LLM`, usage (with cached prompt tokens, and on every chunk), n > 1, logprobs,
/generate, /metrics. Stop conditions are in test_openai_stops.py."""
from __future__ import annotations

import json

import httpx
import pytest

from tests.server.openai_fixtures import MESSAGES, PROMPT, client, greedy, offline, server  # noqa: F401

def test_models_and_health(server, client):
    assert [m.id for m in client.models.list().data] == [server.model]
    assert httpx.get(server.url + "/health").json()["status"] == "ok"


def test_completion_matches_offline(server, client, offline):
    ref = offline.generate([PROMPT], greedy())[0]
    r = client.completions.create(model=server.model, prompt=PROMPT, max_tokens=16, temperature=0)
    assert r.choices[0].text == ref.text
    assert r.choices[0].finish_reason == ref.finish_reason
    assert r.usage.prompt_tokens == len(ref.prompt_token_ids)
    assert r.usage.completion_tokens == len(ref.token_ids)
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens

    chunks = list(client.completions.create(model=server.model, prompt=PROMPT, max_tokens=16, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == ref.text
    assert chunks[-1].usage.completion_tokens == len(ref.token_ids)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == ref.finish_reason


def test_chat_matches_offline(server, client, offline):
    tok = offline.tokenizer
    ids = tok.encode(tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True),
                     add_special_tokens=False)
    ref = offline.generate([ids], greedy(12))[0]
    r = client.chat.completions.create(model=server.model, messages=MESSAGES, max_tokens=12, temperature=0)
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == ref.text
    assert r.usage.prompt_tokens == len(ids)
    assert r.usage.completion_tokens == len(ref.token_ids)

    stream = client.chat.completions.create(model=server.model, messages=MESSAGES, max_tokens=12, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ref.text
    assert chunks[-1].usage.prompt_tokens == len(ids) and chunks[-1].usage.completion_tokens == len(ref.token_ids)


def test_repeated_prompt_reports_cached_tokens(server, client):
    prompt = "A repeated prompt that is long enough to fill several KV pages of four tokens each"
    first = client.completions.create(model=server.model, prompt=prompt, max_tokens=4, temperature=0)
    second = client.completions.create(model=server.model, prompt=prompt, max_tokens=4, temperature=0)
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert 0 < cached < second.usage.prompt_tokens and cached % 4 == 0
    assert second.choices[0].text == first.choices[0].text


def test_n_choices_and_batch_prompts(server, client):
    r = client.completions.create(model=server.model, prompt=[PROMPT, "Hello"], n=3, max_tokens=5,
                                  temperature=1.0, seed=7, extra_body={"ignore_eos": True})
    assert sorted(c.index for c in r.choices) == list(range(6))
    assert r.usage.completion_tokens == 30
    chat = client.chat.completions.create(model=server.model, messages=MESSAGES, n=2, max_tokens=4, seed=1,
                                          extra_body={"ignore_eos": True})
    assert len(chat.choices) == 2 and chat.usage.completion_tokens == 8


def test_logprobs(server, client):
    r = client.completions.create(model=server.model, prompt=PROMPT, max_tokens=6, temperature=0, logprobs=2,
                                  extra_body={"ignore_eos": True})
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == 6 and all(x <= 0 for x in lp.token_logprobs)
    assert all(len(t) <= 2 for t in lp.top_logprobs)
    c = client.chat.completions.create(model=server.model, messages=MESSAGES, max_tokens=4, temperature=0,
                                       logprobs=True, top_logprobs=3, extra_body={"ignore_eos": True})
    content = c.choices[0].logprobs.content
    assert len(content) == 4 and all(len(e.top_logprobs) == 3 for e in content)


def test_chat_logprob_bytes_join_into_the_answer(server, client):
    """Each token's `bytes` are its own, also where it holds part of a character (which its `token` text cannot
    show): joined, they are the answer's UTF-8, as streamed and not."""
    chat = dict(model=server.model, messages=MESSAGES, max_tokens=24, temperature=0, logprobs=True, top_logprobs=2,
                extra_body={"ignore_eos": True, "skip_special_tokens": False})
    whole = client.chat.completions.create(**chat).choices[0]
    joined = b"".join(bytes(e.bytes) for e in whole.logprobs.content)
    assert joined.decode("utf-8", errors="replace") == whole.message.content
    streamed = [e for c in client.chat.completions.create(**chat, stream=True) if c.choices and c.choices[0].logprobs
                for e in c.choices[0].logprobs.content]
    assert [e.bytes for e in streamed] == [e.bytes for e in whole.logprobs.content]
    partial = [e for c in whole.logprobs.content for e in [c, *c.top_logprobs] if e.token == "\ufffd"]
    assert partial and all(e.bytes != [0xEF, 0xBF, 0xBD] for e in partial)  # their bytes, not U+FFFD's UTF-8


def test_streamed_choices_with_logprobs_add_up_to_the_whole_answer(server, client):
    """However the server groups a stream's tokens into chunks (one per token, or several where the frontend
    fell behind), each choice's text, logprobs and text offsets add up to the answer without streaming."""
    args = dict(model=server.model, prompt=PROMPT, max_tokens=8, temperature=0, logprobs=1, n=2,
                extra_body={"ignore_eos": True})
    whole = client.completions.create(**args)
    texts, tokens, offsets = {0: "", 1: ""}, {0: [], 1: []}, {0: [], 1: []}
    for c in client.completions.create(**args, stream=True):
        for ch in c.choices:
            texts[ch.index] += ch.text
            if ch.logprobs:
                tokens[ch.index] += ch.logprobs.tokens
                offsets[ch.index] += ch.logprobs.text_offset
    for ch in whole.choices:
        assert texts[ch.index] == ch.text
        assert tokens[ch.index] == ch.logprobs.tokens and len(tokens[ch.index]) == 8
        assert offsets[ch.index] == ch.logprobs.text_offset
    chat = dict(model=server.model, messages=MESSAGES, max_tokens=6, temperature=0, logprobs=True, top_logprobs=2,
                extra_body={"ignore_eos": True})
    whole = client.chat.completions.create(**chat).choices[0]
    content, entries = "", []
    for c in client.chat.completions.create(**chat, stream=True):
        if c.choices:
            content += c.choices[0].delta.content or ""
            entries += c.choices[0].logprobs.content if c.choices[0].logprobs else []
    assert content == whole.message.content
    assert [e.token for e in entries] == [e.token for e in whole.logprobs.content]
    # the second request reuses the first's cached prompt pages: the same tokens, logprobs within rounding
    assert [e.logprob for e in entries] == pytest.approx([e.logprob for e in whole.logprobs.content], abs=1e-4)


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_continuous_usage_stats_puts_usage_on_every_chunk(server, path):
    """vLLM's `stream_options.continuous_usage_stats`: each chunk carries its choice's usage so far, rising to the
    final usage; the text is the stream's without it."""
    body = {"model": server.model, "max_tokens": 10, "temperature": 0, "ignore_eos": True, "stream": True, "n": 2}
    body.update({"prompt": PROMPT} if "chat" not in path else {"messages": MESSAGES})
    plain, _ = _sse(server.url + path, {**body, "stream_options": {"include_usage": True}})
    text, events = _sse(server.url + path, {**body, "stream_options": {"include_usage": True,
                                                                       "continuous_usage_stats": True}})
    assert text == plain
    *chunks, last = events
    assert chunks and all(e["choices"] and "usage" in e for e in chunks), chunks[:3]
    prompt = last["usage"]["prompt_tokens"]  # one prompt, counted once over the two choices
    for index in (0, 1):
        seen = [e["usage"] for e in chunks if e["choices"][0]["index"] == index]
        counts = [u["completion_tokens"] for u in seen]
        assert counts == sorted(counts) and counts[-1] == 10 and all(u["prompt_tokens"] == prompt for u in seen)
        assert all(u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"] for u in seen)
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == 20


def _sse(url: str, body: dict) -> tuple[dict, list[dict]]:
    """A stream's text per choice index and its JSON events."""
    events, text = [], {}
    with httpx.stream("POST", url, json=body, timeout=60) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: {"):
                events.append(json.loads(line[6:]))
                for c in events[-1]["choices"]:
                    piece = c.get("text") if "text" in c else (c.get("delta") or {}).get("content")
                    text[c["index"]] = text.get(c["index"], "") + (piece or "")
    return text, events


def test_priority_is_accepted(server, client, offline):
    """vLLM's `priority` field (here with the default fcfs policy, which ignores it)."""
    ref = offline.generate([PROMPT], greedy(4))[0]
    r = client.completions.create(model=server.model, prompt=PROMPT, max_tokens=4, temperature=0,
                                  extra_body={"priority": -3})
    assert r.choices[0].text == ref.text
    r = httpx.post(server.url + "/generate", json={"input_ids": ref.prompt_token_ids, "sampling_params": {
        "max_tokens": 4, "temperature": 0, "priority": 7}}, timeout=60)
    assert r.status_code == 200 and r.json()["output_ids"] == ref.token_ids


def test_native_generate_with_token_ids(server, offline):
    ids = offline.tokenizer.encode(PROMPT)
    ref = offline.generate([ids], greedy(8))[0]
    body = {"input_ids": ids, "sampling_params": {"temperature": 0, "max_tokens": 8}}
    r = httpx.post(server.url + "/generate", json=body, timeout=60).json()
    assert r["output_ids"] == ref.token_ids and r["text"] == ref.text
    assert r["prompt_tokens"] == len(ids) and r["completion_tokens"] == len(ref.token_ids)
    with httpx.stream("POST", server.url + "/generate", json={**body, "stream": True}, timeout=60) as s:
        events = [line[6:] for line in s.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    import json
    streamed = [json.loads(e) for e in events[:-1]]
    assert sum((e["output_ids"] for e in streamed), []) == ref.token_ids


def _series(text: str, name: str) -> float:
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")))


def test_metrics(server, client):
    before = httpx.get(server.url + "/metrics").text
    client.completions.create(model=server.model, prompt=PROMPT, max_tokens=2, extra_body={"ignore_eos": True})
    text = httpx.get(server.url + "/metrics").text
    for name, grew in (("tierlm_engine_generation_tokens_total", 2), ("tierlm_engine_requests_total", 1),
                       ("tierlm_engine_retracted_requests_total", 0),
                       ("tierlm_inter_token_latency_seconds_count", 1)):  # two tokens, one interval
        assert _series(text, name) - _series(before, name) == grew, name
    for name in ("tierlm_requests_total{endpoint=\"/v1/completions\",status=\"200\"}",
                 "tierlm_time_to_first_token_seconds_bucket", "tierlm_time_per_output_token_seconds_bucket",
                 "tierlm_num_requests_running", "tierlm_num_requests_waiting", "tierlm_kv_used_tokens",
                 "tierlm_kv_usage_ratio", "tierlm_cache_hits_total{tier=\"L1\"}"):
        assert name in text, name
