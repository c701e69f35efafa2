"""vLLM's /tokenize and /detokenize against a live `tierlm serve`: the ids the served tokenizer and chat template
give, the same ids a generation request reports as its prompt, and text back from ids."""
from __future__ import annotations

import shutil

import httpx
import pytest
from transformers import AutoTokenizer

from tests.server.helpers import start_server

MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hello."}]


# Qwen3's switch, as its own template reads it: an empty thought written into the prompt
THINKING_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% if enable_thinking is defined and enable_thinking is false %}{{ '<think>\\n\\n</think>\\n\\n' }}{% endif %}"
    "{% endif %}")


@pytest.fixture(scope="module")
def model(tiny_qwen3, tmp_path_factory):
    """The tiny model with a chat template that reads `enable_thinking`."""
    folder = shutil.copytree(tiny_qwen3, tmp_path_factory.mktemp("thinking") / "m")
    (folder / "chat_template.jinja").write_text(THINKING_TEMPLATE)
    return folder


@pytest.fixture(scope="module")
def server(model, tmp_path_factory):
    srv = start_server(model, tmp_path_factory.mktemp("tokenize"))
    yield srv
    assert srv.stop() == 0, srv.log_text()


@pytest.fixture(scope="module")
def tokenizer(model):
    return AutoTokenizer.from_pretrained(model)


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


def test_chat_template_kwargs_reach_the_template(server, tokenizer):
    """vLLM's and SGLang's `chat_template_kwargs` (Qwen3's `enable_thinking`), in /tokenize and in a chat
    completion; the arguments the server sets itself cannot be overridden through them."""
    kwargs = {"enable_thinking": False}
    off = post(server, "/tokenize", {"messages": MESSAGES, "chat_template_kwargs": kwargs})
    on = post(server, "/tokenize", {"messages": MESSAGES})
    rendered = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True, **kwargs)
    assert rendered.endswith("</think>\n\n") and off["tokens"] == tokenizer.encode(rendered, add_special_tokens=False)
    assert off["count"] > on["count"] and off["tokens"][:on["count"]] == on["tokens"]
    usage = post(server, "/v1/chat/completions", {"model": server.model, "messages": MESSAGES, "max_tokens": 1,
                                                  "chat_template_kwargs": kwargs})["usage"]
    assert usage["prompt_tokens"] == off["count"]
    for key in ("tokenize", "add_generation_prompt", "chat_template", "bad-name"):
        r = httpx.post(server.url + "/v1/chat/completions", timeout=60, json={
            "model": server.model, "messages": MESSAGES, "chat_template_kwargs": {key: True}})
        assert r.status_code == 400 and r.json()["error"]["param"] == f"chat_template_kwargs.{key}", r.text


def test_continue_final_message_renders_the_last_message_open(server, tokenizer):
    """vLLM's `continue_final_message`: the text ends inside the assistant's last message, for the model to go
    on with it (the template's end of turn left out), in /tokenize and in a chat completion."""
    partial = [*MESSAGES, {"role": "assistant", "content": "Hello, I"}]
    body = {"messages": partial, "continue_final_message": True, "add_generation_prompt": False}
    out = post(server, "/tokenize", body)
    rendered = tokenizer.apply_chat_template(partial, tokenize=False, continue_final_message=True)
    assert rendered.endswith("Hello, I") and out["tokens"] == tokenizer.encode(rendered, add_special_tokens=False)
    usage = post(server, "/v1/chat/completions", {"model": server.model, "max_tokens": 2, **body})["usage"]
    assert usage["prompt_tokens"] == out["count"]
