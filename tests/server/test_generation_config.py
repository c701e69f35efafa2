"""`tierlm serve` under a model's generation_config.json: requests that leave a sampling field unset take the
model's value (OpenAI routes and /generate), their own values win, and `--generation-config none` ignores it."""
from __future__ import annotations

import httpx
import pytest

from tests.engine.test_generation_defaults import with_generation_config
from tests.server.helpers import start_server

PROMPT = "The quick brown fox jumps over the lazy dog and then"


@pytest.fixture(scope="module")
def model(tiny_qwen3, tmp_path_factory):
    # greedy by the model's word; top_k 1 would make any temperature greedy, so only temperature is set
    return with_generation_config(tiny_qwen3, tmp_path_factory.mktemp("gc") / "m", {"temperature": 0.0})


def completion(url: str, **fields) -> list[str]:
    """The texts of 4 choices of one completions request."""
    body = {"model": "m", "prompt": PROMPT, "max_tokens": 12, "n": 4, **fields}
    r = httpx.post(url + "/v1/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    return [c["text"] for c in r.json()["choices"]]


def test_unset_fields_take_the_models_values(model, tmp_path):
    srv = start_server(model, tmp_path, "--served-model-name", "m")
    try:
        greedy = completion(srv.url, temperature=0)
        assert len(set(greedy)) == 1
        assert completion(srv.url) == greedy  # temperature unset: the model's 0.0
        sampled = completion(srv.url, temperature=1.0, seed=3)  # the request's own value wins
        assert sampled != greedy
        gen = httpx.post(srv.url + "/generate", json={"text": PROMPT, "sampling_params": {"max_tokens": 12}},
                         timeout=60)
        assert gen.status_code == 200, gen.text
        assert gen.json()["text"] == greedy[0]
        assert "generation_config: temperature=0" in srv.log_text()
    finally:
        assert srv.stop() == 0, srv.log_text()


def test_none_ignores_the_file(model, tmp_path):
    srv = start_server(model, tmp_path, "--served-model-name", "m", "--generation-config", "none")
    try:
        assert len(set(completion(srv.url, seed=5))) > 1  # temperature 1.0: four samples, not all alike
    finally:
        assert srv.stop() == 0, srv.log_text()
