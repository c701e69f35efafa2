"""OpenAI's `logit_bias` through `tierlm serve`: completions, chat and /generate give the offline engine's tokens
for the same bias (JSON keys are token ids written as strings)."""
from __future__ import annotations

import httpx

from tests.conftest import CPU_OPTS
from tests.server.helpers import start_server
from tierlm import LLM, SamplingParams

PROMPT = "the quick brown fox jumps over the lazy dog"
N = 10


def post(url: str, path: str, body: dict) -> dict:
    r = httpx.post(url + path, json=body, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def test_logit_bias_over_http_equals_the_engine(tiny_qwen3, tmp_path):
    llm = LLM(str(tiny_qwen3), **CPU_OPTS)
    ids = llm.tokenizer.encode(PROMPT)
    greedy = SamplingParams(temperature=0, max_tokens=N, ignore_eos=True)
    plain = llm.generate(ids, greedy)[0].token_ids
    bias = {plain[0]: -100.0, plain[2]: 7.5}  # the first plain token banned, another pushed up
    biased = llm.generate(ids, SamplingParams(temperature=0, max_tokens=N, ignore_eos=True, logit_bias=bias))[0]
    forced = llm.tokenizer.decode([ids[1]] * 3, skip_special_tokens=True)
    llm.close()
    assert biased.token_ids != plain and plain[0] not in biased.token_ids
    wire = {str(t): b for t, b in bias.items()}
    srv = start_server(tiny_qwen3, tmp_path, "--served-model-name", "m")
    try:
        body = {"model": "m", "prompt": PROMPT, "max_tokens": N, "ignore_eos": True, "temperature": 0}
        assert post(srv.url, "/v1/completions", {**body, "logit_bias": wire})["choices"][0]["text"] == biased.text
        assert post(srv.url, "/v1/completions", body)["choices"][0]["text"] != biased.text
        gen = post(srv.url, "/generate", {"input_ids": ids, "sampling_params": {
            "max_tokens": N, "ignore_eos": True, "temperature": 0, "logit_bias": wire}})
        assert gen["output_ids"] == biased.token_ids
        chat = {"model": "m", "max_tokens": 3, "temperature": 0, "messages": [{"role": "user", "content": PROMPT}],
                "logit_bias": {str(ids[1]): 100.0}}
        reply = post(srv.url, "/v1/chat/completions", chat)["choices"][0]
        assert reply["message"]["content"] == forced and reply["finish_reason"] == "length"
    finally:
        assert srv.stop() == 0, srv.log_text()
