"""How requests stop through the OpenAI routes and /generate, with the official `openai` client and httpx against a
live `tierlm serve`: stop strings, `stop_reason`, usage when a stop ends a request, `min_tokens` and
`include_stop_str_in_output` (and `no_stop_trim`), and what a stream keeps back for a stop string."""
from __future__ import annotations

import httpx
import pytest

from tests.server.openai_fixtures import MESSAGES, PROMPT, client, greedy, offline, server  # noqa: F401
from tierlm.sampling_params import SamplingParams


def test_stop_string(server, client, offline):
    ref = offline.generate([PROMPT], greedy(16))[0].text
    stop = ref[4:7]
    if not stop.strip():
        pytest.skip("greedy text has no usable stop string")
    r = client.completions.create(model=server.model, prompt=PROMPT, max_tokens=16, temperature=0, stop=[stop])
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].text == ref[:ref.index(stop)]
    assert r.choices[0].model_extra["stop_reason"] == stop  # vLLM's field: which stop ended it


def test_stop_reason_names_the_stop_string_or_token(server, client, offline):
    """vLLM's `stop_reason` on both OpenAI routes, streamed and not, and /generate: the stop string or stop token
    id that ended a choice; None when it ended by length or end of sequence."""
    ref = offline.generate([PROMPT], greedy(16))[0]
    tok = ref.token_ids[3]
    r = client.completions.create(model=server.model, prompt=PROMPT, max_tokens=16, temperature=0,
                                  extra_body={"stop_token_ids": [tok]})
    assert (r.choices[0].finish_reason, r.choices[0].model_extra["stop_reason"]) == ("stop", tok)
    chunks = list(client.completions.create(model=server.model, prompt=PROMPT, max_tokens=16, temperature=0,
                                            stream=True, extra_body={"stop_token_ids": [tok]}))
    last = [c.choices[0] for c in chunks if c.choices][-1]
    assert (last.finish_reason, last.model_extra["stop_reason"]) == ("stop", tok)
    r = client.completions.create(model=server.model, prompt=PROMPT, max_tokens=4, temperature=0)
    assert r.choices[0].finish_reason == "length" and r.choices[0].model_extra["stop_reason"] is None
    chat = offline.generate([offline.tokenizer.apply_chat_template(MESSAGES, tokenize=False,
                                                                   add_generation_prompt=True)], greedy(8))[0]
    word = next(chat.text[i:i + 2] for i in range(len(chat.text) - 1) if chat.text[i:i + 2].isalnum())
    r = client.chat.completions.create(model=server.model, messages=MESSAGES, max_tokens=8, temperature=0,
                                       stop=[word])
    assert r.choices[0].message.content == chat.text[:chat.text.index(word)]
    assert r.choices[0].model_extra["stop_reason"] == word
    chunks = list(client.chat.completions.create(model=server.model, messages=MESSAGES, max_tokens=8,
                                                 temperature=0, stop=[word], stream=True))
    assert [c.choices[0].model_extra.get("stop_reason") for c in chunks if c.choices][-1] == word
    r = httpx.post(server.url + "/generate", timeout=60, json={"input_ids": ref.prompt_token_ids, "sampling_params": {
        "max_tokens": 16, "temperature": 0, "stop_token_ids": [tok]}}).json()
    assert r["stop_reason"] == tok and r["finish_reason"] == "stop"


def test_usage_counts_the_tokens_returned_when_a_stop_ends_the_request(server, client, offline):
    """A request that stops (end of sequence, stop token, stop string) while its next step is already on the
    device drops that step's token: usage counts the tokens it returned, streamed or not, and /generate too."""
    ref = offline.generate([PROMPT], greedy(16))[0]
    eos = offline.tokenizer.eos_token_id
    stop = ref.text[4:7]
    cases = [{"stop_token_ids": [ref.token_ids[3]]}, {"logit_bias": {str(eos): 30}}, {"max_tokens": 5}]
    cases += [{"stop": [stop]}] if stop.strip() else []
    for extra in cases:
        fields = {"max_tokens": 16, **extra}
        max_tokens = fields.pop("max_tokens")
        r = client.completions.create(model=server.model, prompt=PROMPT, temperature=0, logprobs=1,
                                      max_tokens=max_tokens, extra_body=fields)
        returned = len(r.choices[0].logprobs.tokens)
        assert r.usage.completion_tokens == returned and returned < 16, (extra, r.usage, returned)
        chunks = list(client.completions.create(model=server.model, prompt=PROMPT, temperature=0, logprobs=1,
                                                max_tokens=max_tokens, stream=True,
                                                stream_options={"include_usage": True}, extra_body=fields))
        assert chunks[-1].usage.completion_tokens == returned, extra
    r = httpx.post(server.url + "/generate", timeout=60, json={"input_ids": ref.prompt_token_ids, "sampling_params": {
        "max_tokens": 16, "temperature": 0, "stop_token_ids": [ref.token_ids[3]]}}).json()
    assert r["completion_tokens"] == len(r["output_ids"]) == ref.token_ids.index(ref.token_ids[3]) + 1


def test_min_tokens_and_include_stop_str_in_output(server, client, offline):
    """vLLM's `min_tokens` and `include_stop_str_in_output` (and SGLang's `no_stop_trim`, the same) through both
    OpenAI routes, streamed and not, and /generate: the same text as the offline engine given them."""
    eos = offline.tokenizer.eos_token_id
    fields = {"min_tokens": 6, "logit_bias": {str(eos): 30}}  # end-of-sequence would win at once
    ref = offline.generate([PROMPT], SamplingParams(temperature=0.0, max_tokens=16, min_tokens=6,
                                                    logit_bias={eos: 30.0}))[0]
    assert ref.finish_reason == "stop" and len(ref.token_ids) == 7
    r = client.completions.create(model=server.model, prompt=PROMPT, max_tokens=16, temperature=0,
                                  extra_body=fields)
    assert r.choices[0].text == ref.text and r.usage.completion_tokens == 7 and r.choices[0].finish_reason == "stop"
    chunks = list(client.completions.create(model=server.model, prompt=PROMPT, max_tokens=16, temperature=0,
                                            stream=True, extra_body=fields))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == ref.text
    ids = offline.tokenizer.encode(PROMPT)
    r = httpx.post(server.url + "/generate", timeout=60, json={"input_ids": ids, "sampling_params": {
        "max_tokens": 16, "temperature": 0, "min_tokens": 6, "logit_bias": {str(eos): 30}}}).json()
    assert r["output_ids"] == ref.token_ids

    plain = offline.generate([PROMPT], greedy(16))[0].text
    stop = plain[4:7]
    if not stop.strip():
        pytest.skip("greedy text has no usable stop string")
    want = plain[:plain.index(stop) + len(stop)]
    for extra in ({"include_stop_str_in_output": True}, {"no_stop_trim": True}):
        r = client.completions.create(model=server.model, prompt=PROMPT, max_tokens=16, temperature=0, stop=[stop],
                                      extra_body=extra)
        assert r.choices[0].finish_reason == "stop" and r.choices[0].text == want, extra
        chunks = list(client.completions.create(model=server.model, prompt=PROMPT, max_tokens=16, temperature=0,
                                                stop=[stop], stream=True, extra_body=extra))
        assert "".join(c.choices[0].text for c in chunks if c.choices) == want, extra
    r = client.chat.completions.create(model=server.model, messages=MESSAGES, max_tokens=8, temperature=0,
                                       extra_body={"min_tokens": 8, "include_stop_str_in_output": True})
    assert r.usage.completion_tokens == 8 and r.choices[0].finish_reason == "length"


def _text_by_tokens(client, model, stop):
    """A greedy stream's text so far after each chunk, by the count of tokens so far (logprobs count them)."""
    seen, text, count = {}, "", 0
    for c in client.completions.create(model=model, prompt=PROMPT, max_tokens=24, temperature=0, logprobs=1,
                                       stop=stop, stream=True, extra_body={"ignore_eos": True}):
        for ch in c.choices:
            text += ch.text
            count += len(ch.logprobs.tokens) if ch.logprobs else 0
            seen[count] = text
    return seen, text


def test_a_stream_shows_text_no_stop_string_can_begin_in_at_once(server, client, offline):
    """A stop string is kept back only where the text's end could begin it: one whose first character the
    answer never has delays nothing (however the server groups tokens into chunks, at every token count both
    streams reached their texts agree)."""
    ref = offline.generate([PROMPT], SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True))[0].text
    first = next(c for c in "#~^|@" if c not in ref)
    plain, whole = _text_by_tokens(client, server.model, [])
    stopped, whole_stopped = _text_by_tokens(client, server.model, [first + "never"])
    assert whole == whole_stopped == ref
    both = sorted(set(plain) & set(stopped))
    assert both and all(plain[n] == stopped[n] for n in both), (plain, stopped)
    assert any(stopped[n] for n in both[:-1]), "some text shown before the last token"
