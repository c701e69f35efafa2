"""Scoring a prompt over HTTP: OpenAI's `echo` with `logprobs` on /v1/completions (what evaluation harnesses send
for log-likelihoods), streamed and not, vLLM's `prompt_logprobs` on completions, chat and /generate, and SGLang's
form of /generate (its field names, `return_logprob`, `meta_info`); the numbers equal transformers' log-softmax
over the same prompt."""
from __future__ import annotations

import json

import httpx
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.server.openai_fixtures import PROMPT, client, server  # noqa: F401  (fixtures)


@pytest.fixture(scope="module")
def reference(tiny_qwen3):
    """(prompt ids, per prompt token k >= 1 its logprob given the tokens before it, the tokenizer)."""
    tok = AutoTokenizer.from_pretrained(tiny_qwen3)
    ids = tok(PROMPT)["input_ids"]
    hf = AutoModelForCausalLM.from_pretrained(tiny_qwen3, dtype=torch.float32)
    with torch.no_grad():
        lp = torch.log_softmax(hf(torch.tensor([ids])).logits[0].float(), dim=-1)
    return ids, [lp[k - 1, ids[k]].item() for k in range(1, len(ids))], tok


def _post(server, path, **body):  # noqa: F811
    r = httpx.post(server.url + path, json={"model": server.model, "temperature": 0, **body}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def test_echo_with_logprobs_scores_the_prompt(server, reference):  # noqa: F811
    ids, want, tok = reference
    body = dict(prompt=PROMPT, max_tokens=3, echo=True, logprobs=2)
    choice = _post(server, "/v1/completions", **body)["choices"][0]
    lps = choice["logprobs"]
    assert choice["text"].startswith(PROMPT) and len(lps["tokens"]) == len(ids) + 3
    assert lps["tokens"][:len(ids)] == [tok.decode([i]) for i in ids]
    assert lps["token_logprobs"][0] is None and lps["top_logprobs"][0] is None
    assert lps["token_logprobs"][1:len(ids)] == pytest.approx(want, abs=1e-4)
    assert all(len(top) <= 2 for top in lps["top_logprobs"][1:])
    assert lps["text_offset"] == [sum(map(len, lps["tokens"][:i])) for i in range(len(lps["tokens"]))]
    streamed = {"text": "", "tokens": [], "token_logprobs": [], "text_offset": []}
    with httpx.stream("POST", server.url + "/v1/completions", timeout=60,
                      json={"model": server.model, "temperature": 0, "stream": True, **body}) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                for c in json.loads(line[6:])["choices"]:
                    streamed["text"] += c["text"]
                    for key in ("tokens", "token_logprobs", "text_offset"):
                        streamed[key] += (c["logprobs"] or {}).get(key, [])
    assert streamed == {"text": choice["text"], **{k: lps[k] for k in ("tokens", "token_logprobs", "text_offset")}}


def test_echo_alone_and_with_several_choices(server, reference):  # noqa: F811
    plain = _post(server, "/v1/completions", prompt=PROMPT, max_tokens=3)["choices"][0]["text"]
    echoed = _post(server, "/v1/completions", prompt=[PROMPT, PROMPT], max_tokens=3, echo=True, n=2)["choices"]
    assert [c["text"] for c in echoed] == [PROMPT + plain] * 4 and all(c["logprobs"] is None for c in echoed)
    ids = reference[0]
    by_ids = _post(server, "/v1/completions", prompt=ids, max_tokens=3, echo=True)["choices"][0]["text"]
    assert by_ids == reference[2].decode(ids) + plain


def test_prompt_logprobs_on_every_route(server, reference):  # noqa: F811
    ids, want, _ = reference
    got = _post(server, "/v1/completions", prompt=PROMPT, max_tokens=2, prompt_logprobs=1)["choices"][0]
    plps = got["prompt_logprobs"]
    assert plps[0] is None and len(plps) == len(ids) and got["text"]
    assert [e[str(t)]["logprob"] for e, t in zip(plps[1:], ids[1:])] == pytest.approx(want, abs=1e-4)
    assert all(len(e) <= 2 and min(v["rank"] for v in e.values()) == 1 for e in plps[1:])
    gen = httpx.post(server.url + "/generate", json={"text": PROMPT, "sampling_params": {
        "max_tokens": 2, "temperature": 0, "prompt_logprobs": 0}}, timeout=60).json()
    assert [e["logprob"] for e in gen["prompt_logprobs"][1:]] == pytest.approx(want, abs=1e-4)
    assert [e["token_id"] for e in gen["prompt_logprobs"][1:]] == ids[1:]
    chat = _post(server, "/v1/chat/completions", messages=[{"role": "user", "content": "hi"}], max_tokens=2,
                 prompt_logprobs=0)
    assert chat["prompt_logprobs"][0] is None and len(chat["prompt_logprobs"]) == chat["usage"]["prompt_tokens"]
    r = httpx.post(server.url + "/v1/completions", json={"model": server.model, "prompt": PROMPT, "stream": True,
                                                         "prompt_logprobs": 1})
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt_logprobs"


def test_the_openai_client_reads_echoed_logprobs(client, reference):  # noqa: F811
    ids, want, _ = reference
    out = client.completions.create(model=client.models.list().data[0].id, prompt=PROMPT, max_tokens=1, echo=True,
                                    logprobs=1, temperature=0)
    lps = out.choices[0].logprobs
    assert lps.token_logprobs[0] is None
    assert lps.token_logprobs[1:len(ids)] == pytest.approx(want, abs=1e-4)


def test_max_tokens_zero_with_echo_answers_the_prompt_alone(server, reference):  # noqa: F811
    ids, want, tok = reference
    body = dict(prompt=[ids, ids], max_tokens=0, echo=True, logprobs=1)
    got = _post(server, "/v1/completions", **body)
    for c in got["choices"]:
        assert c["text"] == tok.decode(ids) and c["finish_reason"] == "length" and c["stop_reason"] is None
        assert len(c["logprobs"]["tokens"]) == len(ids)
        assert c["logprobs"]["token_logprobs"][1:] == pytest.approx(want, abs=1e-4)
    assert got["usage"]["completion_tokens"] == 0 and got["usage"]["prompt_tokens"] == 2 * len(ids)
    chunks = []
    with httpx.stream("POST", server.url + "/v1/completions", timeout=60, json={
            "model": server.model, "stream": True, "stream_options": {"include_usage": True}, **body}) as r:
        chunks = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    texts = {0: "", 1: ""}
    for c in (c for chunk in chunks for c in chunk["choices"]):
        texts[c["index"]] += c["text"]
    assert texts == {0: tok.decode(ids), 1: tok.decode(ids)} and chunks[-1]["usage"]["completion_tokens"] == 0
    r = httpx.post(server.url + "/v1/completions", json={"model": server.model, "prompt": PROMPT, "max_tokens": 0})
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"
    echo_text = _post(server, "/v1/completions", prompt=PROMPT, max_tokens=0, echo=True)["choices"][0]["text"]
    assert echo_text == PROMPT


def test_generate_in_sglang_form(server, reference):  # noqa: F811
    ids, want, tok = reference
    body = {"input_ids": ids, "sampling_params": {"max_new_tokens": 5, "temperature": 0, "ignore_eos": True},
            "return_logprob": True, "logprob_start_len": 0, "top_logprobs_num": 2, "return_text_in_logprobs": True,
            "rid": "mine"}
    got = httpx.post(server.url + "/generate", json=body, timeout=60).json()
    meta = got["meta_info"]
    assert meta["id"] == "mine" and meta["finish_reason"] == {"type": "length", "length": 5}
    assert (meta["prompt_tokens"], meta["completion_tokens"]) == (len(ids), 5) and meta["e2e_latency"] > 0
    assert [t[1] for t in meta["output_token_logprobs"]] == got["output_ids"]
    assert [t[2] for t in meta["output_token_logprobs"]] == [tok.decode([i]) for i in got["output_ids"]]
    for (lp, token, _), top in zip(meta["output_token_logprobs"], meta["output_top_logprobs"]):
        assert len(top) == 2 and top[0][1] == token and top[0][0] == pytest.approx(lp)  # greedy: its own the top
    inputs = meta["input_token_logprobs"]
    assert inputs[0] == [None, ids[0], tok.decode([ids[0]])] and [t[1] for t in inputs] == ids
    assert [t[0] for t in inputs[1:]] == pytest.approx(want, abs=1e-4)
    assert meta["input_top_logprobs"][0] is None and all(len(t) == 2 for t in meta["input_top_logprobs"][1:])
    plain = _post(server, "/v1/completions", prompt=ids, max_tokens=5, ignore_eos=True)["choices"][0]["text"]
    assert got["text"] == plain
    # streamed: SGLang's incremental form (each event the new text and ids), meta_info on every event
    events = []
    with httpx.stream("POST", server.url + "/generate", json={**body, "stream": True}, timeout=60) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    assert [i for e in events for i in e["output_ids"]] == got["output_ids"]
    assert [t for e in events for t in e["meta_info"]["output_token_logprobs"]] == meta["output_token_logprobs"]
    assert events[-1]["meta_info"]["finish_reason"] == meta["finish_reason"]
    assert all(e["meta_info"]["finish_reason"] is None for e in events[:-1])
    assert events[0]["meta_info"]["input_token_logprobs"] == inputs


def test_generate_in_sglang_form_scores_a_prompt_alone_and_maps_its_fields(server, reference):  # noqa: F811
    ids, want, _ = reference
    got = httpx.post(server.url + "/generate", timeout=60, json={
        "input_ids": ids, "sampling_params": {"max_new_tokens": 0}, "return_logprob": True,
        "logprob_start_len": 3}).json()
    meta = got["meta_info"]
    assert got["output_ids"] == [] and got["text"] == "" and meta["completion_tokens"] == 0
    assert meta["finish_reason"] == {"type": "length", "length": 0} and meta["output_token_logprobs"] == []
    assert [t[0] for t in meta["input_token_logprobs"]] == pytest.approx(want[2:], abs=1e-4)
    assert "input_top_logprobs" not in meta and meta["input_token_logprobs"][0][2] is None
    free = httpx.post(server.url + "/generate", timeout=60, json={
        "input_ids": ids, "sampling_params": {"max_new_tokens": 4, "temperature": 0}}).json()["output_ids"]
    stopped = httpx.post(server.url + "/generate", timeout=60, json={"input_ids": ids, "sampling_params": {
        "max_new_tokens": 4, "temperature": 0, "stop_token_ids": [free[1]], "no_stop_trim": True}}).json()
    assert stopped["meta_info"]["finish_reason"] == {"type": "stop", "matched": free[1]}
    assert stopped["output_ids"] == free[:free.index(free[1]) + 1]
    routed = httpx.post(server.url + "/generate", timeout=60, json={  # as SGLang's router forwards it
        "input_ids": ids, "sampling_params": {"max_new_tokens": 4, "temperature": 0}, "model": "any",
        "log_metrics": True, "return_hidden_states": False, "background": False, "no_logs": False,
        "return_bytes": False, "return_entropy": False}).json()
    assert routed["output_ids"] == free
    seeded = [httpx.post(server.url + "/generate", timeout=60, json={"input_ids": ids, "sampling_params": {
        "max_new_tokens": 6, "temperature": 1.0, key: 11}}).json()["output_ids"] for key in ("sampling_seed", "seed")]
    assert seeded[0] == seeded[1]
    for sampling, extra, param in [({"max_tokens": 3, "max_new_tokens": 3}, {}, "sampling_params.max_new_tokens"),
                                   ({"min_tokens": 1, "min_new_tokens": 1}, {}, "sampling_params.min_new_tokens"),
                                   ({}, {"return_logprob": True, "logprob_start_len": len(ids)}, "logprob_start_len"),
                                   ({}, {"return_hidden_states": True}, "return_hidden_states"),
                                   ({}, {"return_entropy": True}, "return_entropy")]:
        r = httpx.post(server.url + "/generate", json={"input_ids": ids, "sampling_params": sampling, **extra})
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
