"""Penalties through `tierlm serve`: OpenAI's presence and frequency penalties and vLLM's repetition penalty on
completions, chat and /generate give the offline engine's tokens; a generation_config.json's repetition penalty
is the default of requests that leave it unset."""
from __future__ import annotations

import httpx
import pytest

from tests.conftest import CPU_OPTS
from tests.engine.test_generation_defaults import with_generation_config
from tests.server.helpers import start_server
from tierlm import LLM, SamplingParams

PROMPT = "the quick brown fox jumps over the lazy dog"
N = 14


@pytest.fixture(scope="module")
def model(tiny_qwen3, tmp_path_factory):
    # Qwen2.5's files set a repetition penalty; this one is strong enough to change a tiny model's greedy tokens
    return with_generation_config(tiny_qwen3, tmp_path_factory.mktemp("pen") / "m",
                                  {"temperature": 0.0, "repetition_penalty": 1.8})


@pytest.fixture(scope="module")
def offline(model):
    """Greedy token ids of PROMPT offline, by penalty setting."""
    settings = {"model's": {"repetition_penalty": 1.8}, "none": {}, "frequency": {"frequency_penalty": 1.5},
                "presence": {"presence_penalty": 2.0, "repetition_penalty": 1.0}}
    llm = LLM(str(model), **CPU_OPTS)
    ids = llm.tokenizer.encode(PROMPT)
    outs = {k: llm.generate(ids, SamplingParams(temperature=0, max_tokens=N, ignore_eos=True, **v))[0]
            for k, v in settings.items()}
    chat = llm.tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], tokenize=False,
                                             add_generation_prompt=True)
    chat_ids = llm.tokenizer.encode(chat, add_special_tokens=False)
    for k, v in {"chat": {"frequency_penalty": -2.0}, "chat none": {}}.items():  # a negative one rewards repeats
        outs[k] = llm.generate(chat_ids, SamplingParams(temperature=0, max_tokens=N, ignore_eos=True,
                                                        repetition_penalty=1.0, **v))[0]
    llm.close()
    distinct = {tuple(outs[k].token_ids) for k in ("model's", "none", "frequency")}
    assert len(distinct) == 3 and outs["chat"].token_ids != outs["chat none"].token_ids, \
        "the settings compared must give different outputs (else the test proves nothing)"
    return {k: o.text for k, o in outs.items()}, {k: o.token_ids for k, o in outs.items()}


def post(url: str, path: str, body: dict) -> dict:
    r = httpx.post(url + path, json=body, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def test_penalties_over_http_equal_the_engine(model, offline, tmp_path):
    texts, ids = offline
    srv = start_server(model, tmp_path, "--served-model-name", "m")
    try:
        def completion(**fields) -> str:
            body = {"model": "m", "prompt": PROMPT, "max_tokens": N, "ignore_eos": True, **fields}
            return post(srv.url, "/v1/completions", body)["choices"][0]["text"]

        assert completion() == texts["model's"]  # unset: the file's repetition penalty
        assert completion(repetition_penalty=1.0) == texts["none"]
        assert completion(frequency_penalty=1.5, repetition_penalty=1.0) == texts["frequency"]
        assert completion(presence_penalty=2.0, repetition_penalty=1.0) == texts["presence"]
        gen = post(srv.url, "/generate", {"text": PROMPT, "sampling_params": {
            "max_tokens": N, "ignore_eos": True, "frequency_penalty": 1.5, "repetition_penalty": 1.0}})
        assert gen["output_ids"] == ids["frequency"]
        gen = post(srv.url, "/generate", {"text": PROMPT, "sampling_params": {"max_tokens": N, "ignore_eos": True}})
        assert gen["output_ids"] == ids["model's"]

        def chat(**fields) -> str:
            body = {"model": "m", "max_tokens": N, "ignore_eos": True, "repetition_penalty": 1.0,
                    "messages": [{"role": "user", "content": PROMPT}], **fields}
            return post(srv.url, "/v1/chat/completions", body)["choices"][0]["message"]["content"]

        assert chat(frequency_penalty=-2.0) == texts["chat"]
    finally:
        assert srv.stop() == 0, srv.log_text()
