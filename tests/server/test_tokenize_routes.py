"""vLLM's /tokenize and /detokenize against a live `tierlm serve`: the ids the served tokenizer and chat template
give, the same ids a generation request reports as its prompt, and text back from ids."""
from __future__ import annotations

import httpx
import pytest
from transformers import AutoTokenizer

from tests.server.helpers import start_server

MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def server(tiny_qwen3, tmp_path_factory):
    srv = start_server(tiny_qwen3, tmp_path_factory.mktemp("tokenize"))
    yield srv
    assert srv.stop() == 0, srv.log_text()


@pytest.fixture(scope="module")
def tokenizer(tiny_qwen3):
    return AutoTokenizer.from_pretrained(tiny_qwen3)


def post(server, path: str, body: dict) -> dict:
    r = httpx.post(server.url + path, json=body, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def test_a_prompt_tokenizes_as_the_model_tokenizer_and_as_generation_counts_it(server, tokenizer):
    text = "The quick brown fox, jumps! Ünïcode too"
    out = post(server, "/tokenize", {"model": server.model, "prompt": text})
    want = tokenizer.encode(text)
    assert out == {"count": len(want), "max_model_len": out["max_model_len"], "tokens": want, "token_strs": None}
    assert out["max_model_len"] == httpx.get(server.url + "/v1/models").json()["data"][0]["max_model_len"]
    usage = post(server, "/v1/completions", {"model": server.model, "prompt": text, "max_tokens": 1})["usage"]
    assert usage["prompt_tokens"] == out["count"]
    strs = post(server, "/tokenize", {"prompt": text, "return_token_strs": True})["token_strs"]
    assert strs == tokenizer.convert_ids_to_tokens(want)


def test_messages_tokenize_as_chat_completions_renders_them(server, tokenizer):
    out = post(server, "/tokenize", {"messages": MESSAGES})
    rendered = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert out["tokens"] == tokenizer.encode(rendered, add_special_tokens=False)
    usage = post(server, "/v1/chat/completions", {"model": server.model, "messages": MESSAGES,
                                                  "max_tokens": 1})["usage"]
    assert usage["prompt_tokens"] == out["count"]
    bare = post(server, "/tokenize", {"messages": MESSAGES, "add_generation_prompt": False})
    assert bare["count"] < out["count"] and out["tokens"][:bare["count"]] == bare["tokens"]


def test_detokenize_reads_ids_back(server, tokenizer):
    text = "hello there, fox"
    ids = post(server, "/tokenize", {"prompt": text})["tokens"]
    assert post(server, "/detokenize", {"model": server.model, "tokens": ids}) == {"prompt": tokenizer.decode(ids)}
    assert post(server, "/detokenize", {"tokens": []}) == {"prompt": ""}
    eos = tokenizer.eos_token_id
    assert post(server, "/detokenize", {"tokens": [eos]})["prompt"] == tokenizer.decode([eos])  # kept, as vLLM
